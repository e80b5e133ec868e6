"""Read-only memory (KVM_MEM_READONLY, KVM_CAP_READONLY_MEM), as QEMU maps ROMs: the guest
reads the slot's bytes at memory speed, and each write becomes an MMIO write exit that
leaves the memory as it was. The dirty_log_real micro-guest makes the accesses; Linux KVM
is the oracle on every --device."""

from __future__ import annotations

import errno

import pytest

from pyhost import Cap, KvmError, MmioWrite

from .test_dirty_log import READ, WRITE, access

READONLY = 2


def test_writes_to_read_only_memory_exit_as_mmio_and_change_nothing(kvm, raw_guest):
    assert kvm.check_extension(Cap.READONLY_MEM) == 1
    g = raw_guest("dirty_log_real", memory=0x80000)
    rom = g.vm.add_memory(0x80000, 0x4000, flags=READONLY)  # pages 0x80-0x83
    rom.write(0x81000, b"\x33")
    assert access(g, 0x81, READ) == []
    assert g.vcpu.get_regs().rbx & 0xFF == 0x33  # the ROM's byte, read with no exit
    assert access(g, 0x81, WRITE) == [MmioWrite(0x81000, b"\x5a")]
    assert rom.read(0x81000, 1) == b"\x33"  # unchanged
    assert access(g, 0x82, WRITE) == [MmioWrite(0x82000, b"\x5a")]  # never read before
    assert access(g, 0x20, WRITE) == []  # RAM beside it is RAM
    assert g.vm.read(0x20000, 1) == b"\x5a"


def test_a_slot_stays_read_only_or_writable(kvm):
    with kvm.create_vm() as vm:
        rom = vm.add_memory(0x100000, 0x1000, flags=READONLY)
        with pytest.raises(KvmError) as info:
            vm.set_user_memory_region(0, 0x100000, 0x1000, rom.host_address, 0)
        assert info.value.errno == errno.EINVAL
        vm.set_user_memory_region(0, 0x200000, 0x1000, rom.host_address, READONLY)  # move
