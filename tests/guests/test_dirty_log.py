"""Dirty logging (KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG), driven by the dirty_log_real
micro-guest: the test picks which pages the guest reads or writes, then reads the log.
Linux KVM is the oracle: the same sequence must give the same logs on every --device."""

from __future__ import annotations

import errno

import pytest

from pyhost import Hlt, IoIn, IoOut, KvmError
from pyhost.abi import ffi
from pyhost.exits import Exit
from pyhost.ioctl import kvm_ioctl
from pyhost.raw import RawGuest

LOG_DIRTY_PAGES = 1
READ, WRITE, STRING_IN = 0, 1, 2
MULTI_ADDRESS_SPACE = 118  # KVM_CAP_MULTI_ADDRESS_SPACE


def access(g: RawGuest, page: int, kind: int) -> list[Exit]:
    """Have dirty_log_real make one access (READ, WRITE, STRING_IN) to the first byte(s) of
    `page`; the exits other than its own port I/O, up to the OUT that ends it.  (Also used
    by test_readonly_mem.py and test_sync_mmu.py.)"""
    ex = g.vcpu.run()
    assert isinstance(ex, IoIn) and ex.port == 0x71, ex
    ex.data[:2] = page.to_bytes(2, "little")
    ex = g.vcpu.run()
    assert isinstance(ex, IoIn) and ex.port == 0x72, ex
    ex.data[0] = kind
    seen: list[Exit] = []
    while (ex := g.vcpu.run()) != IoOut(0x70, 1, 1, bytes([kind])):
        if isinstance(ex, IoIn) and ex.port == 0x73:  # REP INSB, maybe in pieces
            ex.data[:] = b"\xab" * len(ex.data)
        else:
            seen.append(ex)
        assert len(seen) < 10, seen
    return seen


def touch(g: RawGuest, accesses: list[tuple[int, int]]) -> None:
    """Have the guest make each (page, access) in turn, with no other exit."""
    for page, kind in accesses:
        assert access(g, page, kind) == [], (page, kind)


def set_logging(g: RawGuest, on: bool) -> None:
    mem = g.vm.memory[0]
    g.vm.set_user_memory_region(0, mem.guest_phys_addr, mem.size, mem.host_address,
                                LOG_DIRTY_PAGES if on else 0)


def test_the_log_holds_the_pages_the_guest_wrote_since_it_was_last_read(raw_guest):
    g = raw_guest("dirty_log_real")
    with pytest.raises(KvmError) as info:
        g.vm.get_dirty_log(0)
    assert info.value.errno == errno.ENOENT  # not logging
    touch(g, [(0x20, WRITE), (0x30, READ)])  # mapped writable before logging starts
    set_logging(g, True)
    assert g.vm.get_dirty_log(0) == []  # the log starts empty
    touch(g, [(0x20, WRITE), (0x21, WRITE), (0x30, READ), (0x40, READ), (0x40, WRITE),
              (0x22, READ)])
    assert g.vm.get_dirty_log(0) == [0x20, 0x21, 0x40]
    assert g.vm.get_dirty_log(0) == []  # reading it cleared it
    # the pages just reported are write-protected again: their next write is logged
    touch(g, [(0x21, READ), (0x40, WRITE), (0x22, READ), (0x22, WRITE)])
    assert g.vm.get_dirty_log(0) == [0x22, 0x40]
    # the kernel's own writes for the guest (string I/O) are logged too
    touch(g, [(0x50, STRING_IN)])
    assert g.vm.get_dirty_log(0) == [0x50]
    assert g.vm.read(0x50 * 4096, 5) == b"\xab" * 4 + b"\0"
    for page in (0x20, 0x21, 0x22, 0x40):
        assert g.vm.read(page * 4096, 1) == b"\x5a"
    set_logging(g, False)
    with pytest.raises(KvmError) as info:
        g.vm.get_dirty_log(0)
    assert info.value.errno == errno.ENOENT
    touch(g, [(0x60, WRITE), (0x40, WRITE)])  # read-only mappings become writable again
    assert g.vm.read(0x60 * 4096, 1) == b"\x5a"
    ex = g.vcpu.run()
    assert isinstance(ex, IoIn)
    ex.data[:2] = b"\xff\xff"
    assert isinstance(g.vcpu.run(), Hlt)


def test_a_slot_created_with_logging_logs_from_its_first_write(raw_guest):
    g = raw_guest("dirty_log_real", memory=0x80000)
    extra = g.vm.add_memory(0x80000, 0x10000, flags=LOG_DIRTY_PAGES)  # slot 1, pages 0x80-
    touch(g, [(0x83, WRITE), (0x85, READ), (0x8F, WRITE)])
    assert g.vm.get_dirty_log(1) == [0x3, 0xF]
    assert extra.read(0x83000, 1) == b"\x5a"
    g.vm.remove_memory(extra)
    with pytest.raises(KvmError) as info:
        g.vm.get_dirty_log(1, 0x10000)
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("slot, err", [
    (5, errno.ENOENT),            # no such slot
    (40, errno.ENOENT),           # an id Linux allows, no slot there
    (32764, errno.EINVAL),        # Linux 6.1's KVM_USER_MEM_SLOTS
    ((1 << 16) | 0, None),        # the SMM address space, where there is one
    ((2 << 16) | 0, errno.EINVAL),  # no third address space
])
def test_get_dirty_log_errnos(kvm, slot, err):
    if err is None:  # an empty address space if the device has SMM (two spaces), else none
        err = errno.ENOENT if kvm.check_extension(MULTI_ADDRESS_SPACE) >= 2 else errno.EINVAL
    with kvm.create_vm() as vm:
        vm.add_memory(0, 0x10000)
        with pytest.raises(KvmError) as info:
            vm.get_dirty_log(slot, 0x10000)
        assert info.value.errno == err


def test_get_dirty_log_to_a_bad_address_is_efault(kvm):
    with kvm.create_vm() as vm:
        vm.add_memory(0, 0x10000, flags=LOG_DIRTY_PAGES)
        log = ffi.new("struct kvmp_dirty_log *", {"slot": 0, "dirty_bitmap": 8})
        with pytest.raises(KvmError) as info:
            kvm_ioctl(vm.fd, "GET_DIRTY_LOG", log)
        assert info.value.errno == errno.EFAULT
