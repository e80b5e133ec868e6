"""The core's slot, CPUID, MSR and argument-checking logic, driven in userspace through its
own ioctl layers (kvmp_main.c) with a stub backend; "user pointers" are this process's."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pyhost.abi import ffi as abi_ffi
from pyhost.abi import lib as abi
from pyhost.cpuid import CpuidEntry, cpuid_entries

from .corelib import load

core = load()
ffi, lib = core.ffi, core.lib
assert lib.kvmp_core_init() == 0


def ptr(cdata) -> int:
    return int(abi_ffi.cast("uintptr_t", cdata))


@pytest.fixture
def vm():
    out = ffi.new("struct kvmp_vm **")
    assert lib.kvmp_vm_create(0, out) == 0
    yield out[0]
    lib.kvmp_vm_put(out[0])
    assert lib.kvmp_user_pinned == 0, "a slot's pinned pages outlived the VM"


@pytest.fixture
def vcpu(vm):
    out = ffi.new("struct kvmp_vcpu **")
    assert lib.kvmp_vcpu_create(vm, 0, out) == 0
    yield out[0]
    lib.kvmp_vcpu_destroy(out[0])


def set_region(vm, slot: int, gpa: int, size: int, uaddr: int, flags: int = 0) -> int:
    r = abi_ffi.new("struct kvmp_userspace_memory_region *", {
        "slot": slot, "flags": flags, "guest_phys_addr": gpa, "memory_size": size,
        "userspace_addr": uaddr})
    return lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_USER_MEMORY_REGION, ptr(r))


def test_slot_rules_and_errnos(vm):
    mem = abi_ffi.new("char[]", 0x30000)
    base = (ptr(mem) + 0xFFF) & ~0xFFF
    E = errno
    assert set_region(vm, 0, 0, 0x10000, base) == 0
    assert set_region(vm, 1, 0x100000, 0x1800, base) == -E.EINVAL       # size
    assert set_region(vm, 1, 0x100800, 0x1000, base) == -E.EINVAL       # gpa
    assert set_region(vm, 1, 0x100000, 0x1000, base + 8) == -E.EINVAL   # user address
    assert set_region(vm, 1, 0x100000, 0x1000, base, flags=4) == -E.EINVAL  # unknown flag
    assert set_region(vm, 1, 0x100000, 0x1000, base, flags=2) == 0        # read-only
    assert set_region(vm, 1, 0x100000, 0x1000, base, flags=0) == -E.EINVAL  # stays so
    assert set_region(vm, 1, 0x100000, 0x1000, base, flags=3) == 0        # + dirty log
    assert set_region(vm, 1, 0, 0, 0) == 0
    assert set_region(vm, 40, 0x100000, 0x1000, base) == -E.EINVAL      # slot id
    assert set_region(vm, 1, 0x8000, 0x10000, base + 0x10000) == -E.EEXIST   # overlap
    assert set_region(vm, 1, 0x10000, 0x10000, base + 0x10000) == 0
    assert set_region(vm, 1, 0x10000, 0x8000, base + 0x10000) == -E.EINVAL   # resize
    assert set_region(vm, 1, 0x200000, 0x10000, base + 0x10000) == 0         # move
    assert lib.kvmp_find_slot(vm, 0x10000) == ffi.NULL
    assert lib.kvmp_find_slot(vm, 0x20FFFF) != ffi.NULL
    assert set_region(vm, 1, 0, 0, 0) == 0                                   # delete
    assert set_region(vm, 1, 0, 0, 0) == -E.EINVAL                           # again
    assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_USER_MEMORY_REGION, 8) == -E.EFAULT


W = 1 << 1  # the write bit of an NPT or EPT leaf


@pytest.fixture
def tdp():
    t = ffi.new("struct kvmp_tdp *")
    assert lib.kvmp_tdp_init(t, 7, 7) == 0  # present, writable, user: NPT's bits
    yield t
    lib.kvmp_tdp_destroy(t)


def fault(vm, tdp, gpa: int, write: bool) -> tuple[int, int]:
    """A nested page fault at gpa: kvmp_tdp_fault's answer and the leaf it left."""
    return lib.kvmp_tdp_fault(vm, tdp, gpa, write), lib.kvmp_tdp_lookup(tdp, gpa)


def test_pages_are_pinned_on_first_touch_and_released_with_the_slot(vm, tdp):
    mem = abi_ffi.new("char[]", 0x5000)
    base = (ptr(mem) + 0xFFF) & ~0xFFF
    assert set_region(vm, 0, 0x40000, 0x4000, base) == 0
    before_pins, before_unmapped = lib.kvmp_user_pinned, lib.kvmp_user_unmapped_bytes
    r, leaf = fault(vm, tdp, 0x41234, False)
    assert r == 0
    assert leaf == (base + 0x1000) | 7  # the userspace build's "physical" address
    assert leaf & W  # no dirty logging: a read maps the page writable
    assert fault(vm, tdp, 0x41000, True)[0] == 0  # the same page: pinned once
    assert lib.kvmp_user_pinned == before_pins + 1
    assert fault(vm, tdp, 0x50000, True)[0] == -errno.ENOENT  # MMIO
    assert set_region(vm, 0, 0, 0, 0) == 0
    assert lib.kvmp_user_pinned == before_pins
    assert lib.kvmp_user_unmapped_bytes == before_unmapped + 0x4000


def test_the_vmms_mapping_changes_take_pages_out_of_the_guest(vm, tdp):
    """What the MMU notifier does: pinned pages in the range are unmapped and unpinned,
    and faults wait (EAGAIN) until the change is over."""
    mem = abi_ffi.new("char[]", 0x9000)
    base = (ptr(mem) + 0xFFF) & ~0xFFF
    assert set_region(vm, 0, 0x100000, 0x8000, base) == 0
    for page in (0, 2, 3, 7):
        assert fault(vm, tdp, 0x100000 + page * 0x1000, False)[0] == 0
    pins, unmapped = lib.kvmp_user_pinned, lib.kvmp_user_unmapped_bytes
    lib.kvmp_vm_mm_invalidate_start(vm, base + 0x1800, base + 0x3001)  # pages 1-3
    assert lib.kvmp_user_pinned == pins - 2          # 2 and 3 were pinned
    assert lib.kvmp_user_unmapped_bytes == unmapped + 0x3000
    assert fault(vm, tdp, 0x102000, False)[0] == -errno.EAGAIN  # under way
    assert fault(vm, tdp, 0x100000, False)[0] == 0   # still pinned: no new pin needed
    lib.kvmp_vm_mm_invalidate_end(vm)
    assert fault(vm, tdp, 0x102000, False)[0] == 0   # pinned again
    assert lib.kvmp_user_pinned == pins - 1
    unmapped = lib.kvmp_user_unmapped_bytes
    lib.kvmp_vm_mm_invalidate_start(vm, base + 0x9000, base + 0x20000)  # beside the slot
    lib.kvmp_vm_mm_invalidate_end(vm)
    assert lib.kvmp_user_unmapped_bytes == unmapped and lib.kvmp_user_pinned == pins - 1


def get_dirty_log(vm, slot: int, words: int = 1) -> tuple[int, list[int]]:
    bitmap = abi_ffi.new("kvmp_u64[]", words)
    log = abi_ffi.new("struct kvmp_dirty_log *", {"slot": slot, "dirty_bitmap": ptr(bitmap)})
    return lib.kvmp_vm_ioctl(vm, abi.KVMP_GET_DIRTY_LOG, ptr(log)), list(bitmap)


def test_dirty_logging_maps_read_only_until_a_write_and_unmaps_what_it_reports(vm, tdp):
    mem = abi_ffi.new("char[]", 0x11000)
    base = (ptr(mem) + 0xFFF) & ~0xFFF
    assert set_region(vm, 0, 0, 0x10000, base) == 0
    assert get_dirty_log(vm, 0)[0] == -errno.ENOENT
    unmapped = lib.kvmp_user_unmapped_bytes
    assert set_region(vm, 0, 0, 0x10000, base, flags=1) == 0   # logging on, in place
    assert lib.kvmp_user_unmapped_bytes == unmapped + 0x10000  # every mapping goes
    r, leaf = fault(vm, tdp, 0x3000, False)
    assert r == 0 and leaf and not leaf & W                    # a read: read-only
    r, leaf = fault(vm, tdp, 0x3000, True)
    assert r == 0 and leaf & W
    assert fault(vm, tdp, 0x4000, True)[0] == 0
    assert fault(vm, tdp, 0x6000, True)[0] == 0
    data = ffi.new("char[]", b"abcd")
    assert lib.kvmp_write_guest(vm, 0x8FFE, data, 4) == 0         # the kernel's writes too
    assert get_dirty_log(vm, 0) == (0, [0b1101011000])
    # the reported pages are unmapped in runs: pages 3-4, 6, 8-9
    assert lib.kvmp_user_unmapped_bytes == unmapped + 0x10000 + 0x5000
    assert get_dirty_log(vm, 0) == (0, [0])
    assert lib.kvmp_user_unmapped_bytes == unmapped + 0x15000  # nothing to unmap
    assert set_region(vm, 0, 0, 0x10000, base, flags=0) == 0   # logging off
    assert get_dirty_log(vm, 0)[0] == -errno.ENOENT
    r, leaf = fault(vm, tdp, 0x5000, False)
    assert r == 0 and leaf & W
    assert get_dirty_log(vm, 0x10000)[0] == -errno.EINVAL      # address space 1: none
    assert get_dirty_log(vm, 32764)[0] == -errno.EINVAL        # beyond Linux's slot ids
    assert get_dirty_log(vm, 31)[0] == -errno.ENOENT


def supported_cpuid_list() -> list[CpuidEntry]:
    c = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 64, "entries": 64})
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_SUPPORTED_CPUID, ptr(c)) == 0
    return cpuid_entries(c)  # copies: c is freed on return


def supported_cpuid() -> dict[int, CpuidEntry]:
    return {e.function: e for e in supported_cpuid_list() if e.index == 0}


def host_flags() -> set[str]:
    return set(next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("flags")).split(":")[1].split())


def test_supported_cpuid_is_filtered_to_what_kvmport_provides():
    leaves = supported_cpuid()
    one = leaves[1]
    host = host_flags()
    # as Linux, whatever the irqchip: a VMM without an in-kernel one models the APIC itself;
    # MTRRs and machine checks have their MSRs in the core
    for bit, flag in ((9, "apic"), (12, "mtrr"), (7, "mce"), (14, "mca")):
        assert bool(one.edx & (1 << bit)) == (flag in host), flag
    assert not one.ecx & (1 << 5), "VMX advertised to the guest"
    assert not one.ecx & (1 << 27), "OSXSAVE is the guest's CR4, not a supported feature"
    assert one.ecx & (1 << 31), "the hypervisor bit is missing"
    # the state the backends switch (x87, SSE, AVX) is offered exactly as the host has it
    for bit, flag in ((26, "xsave"), (28, "avx"), (12, "fma"), (29, "f16c")):
        assert bool(one.ecx & (1 << bit)) == (flag in host), flag
    assert bool(leaves[7].ebx & (1 << 5)) == ("avx2" in host), "avx2"
    assert not leaves[7].ebx & (1 << 16), "AVX-512 advertised: its state is not switched"
    for bit, flag in ((25, "sse"), (26, "sse2")):  # SSE kept exactly as the host has it
        assert bool(one.edx & (1 << bit)) == (flag in host), flag
    for bit, flag in ((0, "pni"), (19, "sse4_1"), (20, "sse4_2")):
        assert bool(one.ecx & (1 << bit)) == (flag in host), flag
    if 0x80000001 in leaves:
        assert not leaves[0x80000001].ecx & (1 << 2), "SVM advertised to the guest"
    too_small = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 1, "entries": 1})
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_SUPPORTED_CPUID, ptr(too_small)) == -errno.E2BIG


def test_xsave_leaf_and_xsetbv_rules(vm, vcpu):
    """CPUID 0xd offers x87|SSE|AVX; XSETBV takes only what the VMM's 0xd.0 offers."""
    if "xsave" not in host_flags():
        assert 0xD not in supported_cpuid()
        return
    xd = {e.index: e for e in supported_cpuid_list() if e.function == 0xD}
    want = 0b111 if "avx" in host_flags() else 0b11
    assert xd[0].eax == want and xd[0].edx == 0
    assert xd[0].ecx == xd[0].ebx == (832 if want == 0b111 else 576)
    assert not xd[1].eax & ~1, "only XSAVEOPT of the 0xd.1 extensions"
    table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 2, "entries": 2})
    table.entries[0] = {"function": 1, "ecx": 1 << 26}
    table.entries[1] = {"function": 0xD, "index": 0, "flags": abi.KVMP_CPUID_FLAG_SIGNIFCANT_INDEX,
                        "eax": 0b111}
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0

    def cpuid(leaf: int, cr4: int) -> list[int]:
        regs = [ffi.new("u32 *", v) for v in (leaf, 0, 0, 0)]
        lib.kvmp_emulate_cpuid(vcpu, cr4, *regs)
        return [r[0] for r in regs]

    assert cpuid(1, 0)[2] == 1 << 26 and cpuid(1, 1 << 18)[2] == 0b11 << 26  # OSXSAVE = CR4
    assert cpuid(0xD, 0)[1] == 576                                          # XCR0 is x87
    for index, value in ((1, 0b11), (0, 0b10), (0, 0b101), (0, 0b1000 | 0b11)):
        assert lib.kvmp_set_xcr(vcpu, index, value) != 0, (index, value)
    assert lib.kvmp_set_xcr(vcpu, 0, 0b11) == 0 and cpuid(0xD, 0)[1] == 576
    if want == 0b111:
        assert lib.kvmp_set_xcr(vcpu, 0, 0b111) == 0 and cpuid(0xD, 0)[1] == 832
    table.entries[1].eax = 0b11  # the VMM withholds AVX: XSETBV must refuse it
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    assert lib.kvmp_set_xcr(vcpu, 0, 0b111) != 0


def test_msr_index_list_sizing_protocol():
    probe = abi_ffi.new("struct kvmp_msr_list *", {"nmsrs": 0})
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_MSR_INDEX_LIST, ptr(probe)) == -errno.E2BIG
    n = probe.nmsrs
    assert n == lib.kvmp_msr_list_len
    full = abi_ffi.new("struct kvmp_msr_list *", {"nmsrs": n, "indices": n})
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_MSR_INDEX_LIST, ptr(full)) == 0
    assert 0xC0000080 in list(full.indices[0:n])


def test_argument_checks():
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_API_VERSION, 0) == 12
    assert lib.kvmp_system_ioctl(abi.KVMP_GET_API_VERSION, 1) == -errno.EINVAL
    assert lib.kvmp_system_ioctl(0xAEEE, 0) == -errno.EINVAL
    assert lib.kvmp_check_extension(abi.KVMP_CAP_IRQCHIP) == 0  # honest: none in kernel
    out = ffi.new("struct kvmp_vm **")
    assert lib.kvmp_vm_create(1, out) == -errno.EINVAL


def test_tss_and_identity_map_addresses_as_linux():
    """Found by lab/fuzz.py: Linux refuses a TSS whose 3 pages would pass 4 GiB, and an
    identity map address once a VCPU was created (even if it is gone again)."""
    out = ffi.new("struct kvmp_vm **")
    assert lib.kvmp_vm_create(0, out) == 0
    vm = out[0]
    try:
        assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_TSS_ADDR, 0xFFFFD000) == 0
        for addr in (0xFFFFD001, 0xFFFFFFFF, 1 << 32, (1 << 64) - 1):
            assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_TSS_ADDR, addr) == -errno.EINVAL
        ident = abi_ffi.new("kvmp_u64 *", 0xFEFFC000)
        assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_IDENTITY_MAP_ADDR, ptr(ident)) == 0
        assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_IDENTITY_MAP_ADDR, 8) == -errno.EFAULT
        vcpu = ffi.new("struct kvmp_vcpu **")
        assert lib.kvmp_vcpu_create(vm, 0, vcpu) == 0
        for arg in (ptr(ident), 8):  # EINVAL before the copy, as Linux
            assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_IDENTITY_MAP_ADDR, arg) == -errno.EINVAL
        lib.kvmp_vcpu_destroy(vcpu[0])
        assert lib.kvmp_vm_ioctl(vm, abi.KVMP_SET_IDENTITY_MAP_ADDR, ptr(ident)) == -errno.EINVAL
    finally:
        lib.kvmp_vm_put(vm)


def test_vcpu_ids_and_places_count_until_the_vm_goes(vm):
    """Found by lab/fuzz.py: Linux frees VCPUs only with their VM, so an id stays taken
    (EEXIST) and a place counts (EINVAL after the maximum) after the VCPU's fd is closed."""
    out = ffi.new("struct kvmp_vcpu **")
    assert lib.kvmp_vcpu_create(vm, 5, out) == 0
    lib.kvmp_vcpu_destroy(out[0])
    assert lib.kvmp_vcpu_create(vm, 5, out) == -errno.EEXIST
    for i in range(64 - 1):  # KVMP_MAX_VCPUS (core/kvmp_core.h)
        assert lib.kvmp_vcpu_create(vm, 100 + i, out) == 0, i
        lib.kvmp_vcpu_destroy(out[0])
    assert lib.kvmp_vcpu_create(vm, 1000, out) == -errno.EINVAL  # 64 were made
    assert lib.kvmp_vcpu_create(vm, 5, out) == -errno.EINVAL  # Linux: the count first


def test_set_cpuid2_checks_the_virtual_address_width_as_linux(vcpu):
    """Found by lab/fuzz.py: Linux's kvm_check_cpuid takes 0x80000008 only with a virtual
    address width (EAX[15:8]) of 48, 57 or 0; the first such entry counts."""
    def set_cpuid(*eaxes: int) -> int:
        table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": len(eaxes), "entries": len(eaxes)})
        for i, eax in enumerate(eaxes):
            table.entries[i] = {"function": 0x80000008, "index": i, "eax": eax}
        return lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table))

    for bits in (0, 48, 57):
        assert set_cpuid(0x3000 | bits << 8) == 0
    for bits in (16, 39, 47, 64, 0xFF):
        assert set_cpuid(0x30 | bits << 8) == -errno.EINVAL
    assert set_cpuid(0x3030, 0x1000) == 0 and set_cpuid(0x1000, 0x3030) == -errno.EINVAL


def test_set_cpuid2_refuses_amx_tile_data_as_linux_without_permission(vcpu):
    """Found by lab/fuzz.py: 0xd.0 offering AMX tile data (XCR0 bit 18, a dynamic feature)
    is EPERM on Linux without the process's guest permission; kvmport has no AMX."""
    def set_leaf_d(*entries: dict) -> int:
        table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": len(entries),
                                                     "entries": len(entries)})
        for i, e in enumerate(entries):
            table.entries[i] = {"function": 0xD, **e}
        return lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table))

    sig = abi.KVMP_CPUID_FLAG_SIGNIFCANT_INDEX
    assert set_leaf_d({"eax": 0b111}) == 0
    assert set_leaf_d({"eax": 0b111 | 1 << 18}) == -errno.EPERM
    assert set_leaf_d({"eax": 0b111 | 1 << 17}) == 0  # tile config: not dynamic
    assert set_leaf_d({"index": 0, "flags": sig, "eax": 1 << 18}) == -errno.EPERM
    assert set_leaf_d({"index": 1, "flags": sig, "eax": 1 << 18}) == 0  # 0xd.1: not 0xd.0
    assert set_leaf_d({"index": 1, "eax": 1 << 18}) == -errno.EPERM  # index not significant
    assert set_leaf_d({"index": 0, "flags": sig, "eax": 3},
                      {"index": 0, "flags": sig, "eax": 1 << 18}) == 0  # the first counts


def test_vcpu_msrs_cpuid_and_interrupt_checks(vm, vcpu):
    assert lib.kvmp_vm_ioctl(vm, 0xAEEE, 0) == -errno.ENOTTY
    assert lib.kvmp_vcpu_ioctl(vcpu, 0xAEEE, 0) == -errno.EINVAL
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_RUN, 1) == -errno.EINVAL
    data = ffi.new("u64 *")
    assert lib.kvmp_get_msr(vcpu, 0x1B, data) == 0 and data[0] == 0xFEE00900  # BSP APIC base
    assert lib.kvmp_set_msr(vcpu, 0xC0000081, 0x1234) == 0                     # backend's
    assert lib.kvmp_get_msr(vcpu, 0xC0000081, data) == 0 and data[0] == 0x1234
    assert lib.kvmp_get_msr(vcpu, 0xDEAD0000, data) != 0                       # not allowed
    irq = abi_ffi.new("struct kvmp_interrupt *", {"irq": 256})
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_INTERRUPT, ptr(irq)) == -errno.EINVAL
    big = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 300, "entries": 300})
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(big)) == -errno.E2BIG
    # a leaf with a significant index matches only its index; unset leaves read zero
    table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 2, "entries": 2})
    table.entries[0].function, table.entries[0].eax = 1, 0x600
    e = table.entries[1]
    e.function, e.index, e.flags, e.ebx = 7, 1, abi.KVMP_CPUID_FLAG_SIGNIFCANT_INDEX, 0x55
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    regs = [ffi.new("u32 *", v) for v in (7, 0, 1, 0)]
    lib.kvmp_emulate_cpuid(vcpu, 0, *regs)
    assert [r[0] for r in regs] == [0, 0x55, 0, 0]
    regs = [ffi.new("u32 *", v) for v in (7, 0, 0, 0)]
    lib.kvmp_emulate_cpuid(vcpu, 0, *regs)
    assert [r[0] for r in regs] == [0, 0, 0, 0]
    probe = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 1, "entries": 1})
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_GET_CPUID2, ptr(probe)) == -errno.E2BIG
    assert probe.nent == 1  # Linux writes no count back with E2BIG


GP = 1  # what kvmp_get_msr/kvmp_set_msr return for a #GP (or a refused KVM_SET_MSRS entry)


def read_msr(vcpu, index: int, host: bool = False) -> int | None:
    data = ffi.new("u64 *")
    r = (lib.kvmp_host_get_msr if host else lib.kvmp_get_msr)(vcpu, index, data)
    return None if r else int(data[0])


def write_msr(vcpu, index: int, value: int, host: bool = False) -> bool:
    return (lib.kvmp_host_set_msr if host else lib.kvmp_set_msr)(vcpu, index, value) == 0


def test_mtrrs_are_kept_per_vcpu_with_linux_checks(vcpu):
    assert read_msr(vcpu, 0xFE) == 0x508  # WC, fixed ranges, 8 variable ranges
    assert not write_msr(vcpu, 0xFE, 0)   # read-only
    assert write_msr(vcpu, 0x2FF, 0xC06) and read_msr(vcpu, 0x2FF) == 0xC06
    assert not write_msr(vcpu, 0x2FF, 0x1006)   # reserved bit
    assert not write_msr(vcpu, 0x2FF, 0xC02)    # type 2 does not exist
    for index in [0x250, 0x258, 0x259, *range(0x268, 0x270)]:
        assert write_msr(vcpu, index, 0x0606060606060606), hex(index)
        assert read_msr(vcpu, index) == 0x0606060606060606
    assert not write_msr(vcpu, 0x250, 0x0606060606060603)
    assert write_msr(vcpu, 0x200, 0x80000006) and read_msr(vcpu, 0x200) == 0x80000006
    assert not write_msr(vcpu, 0x200, 0x80000106)  # base: bits 8-11 reserved
    assert write_msr(vcpu, 0x201, 0xF80000800) and read_msr(vcpu, 0x201) == 0xF80000800
    assert not write_msr(vcpu, 0x201, 0xF80000801)  # mask: bits 0-10 reserved
    assert not write_msr(vcpu, 0x201, 1 << 36)      # beyond MAXPHYADDR (36 without 0x80000008)
    assert read_msr(vcpu, 0x20F) == 0
    for index in (0x210, 0x251, 0x25A, 0x270, 0x2A0, 0x2FE):
        assert read_msr(vcpu, index) is None, hex(index)


def test_machine_check_msrs_follow_setup_mce(vcpu):
    assert read_msr(vcpu, 0x0) == 0 and read_msr(vcpu, 0x1) == 0  # P5_MC_ADDR/TYPE
    # before KVM_X86_SETUP_MCE: Linux's 32 zeroed banks, no MCG_CTL, no CMCI
    assert read_msr(vcpu, 0x179) == 32 and read_msr(vcpu, 0x17A) == 0
    assert read_msr(vcpu, 0x17B) is None and read_msr(vcpu, 0x17B, host=True) == 0
    assert read_msr(vcpu, 0x400) == 0 and read_msr(vcpu, 0x47F) == 0
    assert read_msr(vcpu, 0x480) is None and read_msr(vcpu, 0x280) is None
    assert not write_msr(vcpu, 0x17B, ~0 & (2**64 - 1), host=True)  # no MCG_CTL_P yet
    cap = ffi.new("u64 *")
    assert lib.kvmp_system_ioctl(abi.KVMP_X86_GET_MCE_CAP_SUPPORTED, ptr(cap)) == 0
    assert cap[0] == (1 << 8) | (1 << 24)
    assert lib.kvmp_check_extension(abi.KVMP_CAP_MCE) == 32
    for bad in (0, 33, (1 << 10) | 10):  # no bank, too many, CMCI_P not supported
        assert lib.kvmp_setup_mce(vcpu, bad) == -errno.EINVAL, hex(bad)
    assert lib.kvmp_setup_mce(vcpu, cap[0] | 10) == 0
    amd = "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    # kvm_amd keeps bits 8:0 of MCG_CAP (the rest is reserved on AMD), kvm_intel all of it
    want = (cap[0] | 10) & (0x1FF if amd else 2**64 - 1)
    assert read_msr(vcpu, 0x179) == want and read_msr(vcpu, 0x17B) == 2**64 - 1
    assert read_msr(vcpu, 0x400) == 2**64 - 1 and read_msr(vcpu, 0x427) == 0
    assert read_msr(vcpu, 0x428) is None and read_msr(vcpu, 0x28A, host=True) is None
    assert read_msr(vcpu, 0x280) is None and read_msr(vcpu, 0x280, host=True) == 0  # no CMCI_P
    assert not write_msr(vcpu, 0x17B, 5) and write_msr(vcpu, 0x17B, 0)
    assert write_msr(vcpu, 0x400, 0) and write_msr(vcpu, 0x400, ~(1 << 10) & (2**64 - 1))
    assert not write_msr(vcpu, 0x400, 0xFF)
    assert not write_msr(vcpu, 0x401, 1) and write_msr(vcpu, 0x401, 0)  # guest may only clear
    assert write_msr(vcpu, 0x401, 1, host=True)
    assert write_msr(vcpu, 0xC0010015, 1 << 18) and write_msr(vcpu, 0x401, 5)  # McStatusWrEn


def test_amd_and_misc_msrs_answer_as_linux(vcpu):
    for index in (0xC001001F, 0xC0010055, 0xC0011029, 0xC0010015, 0xC0010010, 0xC0010114,
                  0xC0010117, 0x17, 0x2A, 0xC0010000, 0xC0010007):
        assert read_msr(vcpu, index) == 0, hex(index)
    assert read_msr(vcpu, 0xC001001B) == 0x20000000 and read_msr(vcpu, 0x11E) == 0xBE702111
    assert read_msr(vcpu, 0x1A0) == 0x1800  # BTS and PEBS unavailable
    assert not write_msr(vcpu, 0x1A0, 0) and write_msr(vcpu, 0x1A0, 0, host=True)
    assert not write_msr(vcpu, 0xC0010015, 1) and write_msr(vcpu, 0xC0010015, 0x148)
    assert read_msr(vcpu, 0xC0010015) == 0  # the ignored bits are dropped
    assert read_msr(vcpu, 0x9E) is None and read_msr(vcpu, 0x9E, host=True) == 0x30000
    rev = read_msr(vcpu, 0x8B)
    assert rev in (0x01000065, 0x100000000)
    assert write_msr(vcpu, 0x8B, 7) and read_msr(vcpu, 0x8B) == rev  # the guest's is ignored
    assert write_msr(vcpu, 0x8B, 7, host=True) and read_msr(vcpu, 0x8B) == 7
    assert write_msr(vcpu, 0x12, 0, host=True) and write_msr(vcpu, 0x11, 0, host=True)
    assert not write_msr(vcpu, 0xC0010117, 0x1001) and write_msr(vcpu, 0xC0010117, 0x1000)
    assert not write_msr(vcpu, 0x277, 0x0007040600070402)  # PAT type 2
    assert not write_msr(vcpu, 0x1B, 0xFEE00400)            # x2APIC without enable
    assert not write_msr(vcpu, 0x1B, 0xFEE00901)            # reserved bit
    assert write_msr(vcpu, 0x1B, 0) and read_msr(vcpu, 0x1B) == 0
def host_max_gfn() -> int:
    """Linux's kvm_mmu_max_gfn() on this host: from its physical address width."""
    bits = next(int(ln.split()[3]) for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("address sizes"))
    return (1 << (min(bits, 48) - 12)) - 1


def test_slot_size_and_guest_frame_limits(vm):
    """Linux's limits, checked before anything is allocated: at most 2^31 - 1 pages,
    and no page beyond the host's physical address width (the nested tables' reach)."""
    mem = abi_ffi.new("char[]", 0x3000)
    base = (ptr(mem) + 0xFFF) & ~0xFFF
    assert lib.kvmp_max_gfn() == host_max_gfn()
    top = (lib.kvmp_max_gfn() + 1) << 12
    assert set_region(vm, 0, 0, 1 << 43, 1 << 40) == -errno.EINVAL       # 2^31 pages
    assert set_region(vm, 0, 1 << 52, 0x1000, base) == -errno.EINVAL
    assert set_region(vm, 0, top, 0x1000, base) == -errno.EINVAL
    assert set_region(vm, 0, top - 0x2000, 0x2000, base) == 0           # the last frames
    assert set_region(vm, 0, top - 0x1000, 0x2000, base) == -errno.EINVAL  # moved past it
    assert set_region(vm, 0, 0, 0, 0) == 0


SREGS_OK = dict(cr0=0x60000010, cr4=0, efer=0, cr3=0, apic_base=0xFEE00900)


def check_sregs(vcpu, **fields: int) -> int:
    s = abi_ffi.new("struct kvmp_sregs *")
    for name, value in {**SREGS_OK, **fields}.items():
        if name.startswith("cs_"):
            setattr(s.cs, name[3:], value)
        else:
            setattr(s, name, value)
    return lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_SREGS, ptr(s))


def test_set_sregs_refuses_what_linux_refuses(vcpu):
    """kvmp_check_sregs, the core's KVM_SET_SREGS check (the lab compares it with kvm_amd)."""
    E = -errno.EINVAL
    long_mode = dict(cr0=0x80000011, cr4=0x20, efer=0x500)
    assert check_sregs(vcpu) == 0
    assert check_sregs(vcpu, **long_mode) == 0
    cases = {
        "CR0 bit 32": dict(cr0=(1 << 32) | 0x10),
        "CR0.PG without PE": dict(cr0=0x80000010),
        "CR0.NW without CD": dict(cr0=0x20000010),
        "CR4 reserved bit 15": dict(cr4=1 << 15),
        "CR4 bit 32": dict(cr4=1 << 32),
        "CR4.PKE (PKRU is not switched)": dict(cr4=1 << 22),
        "EFER reserved bit 1": dict(efer=2),
        "EFER.LMA without paging": dict(efer=0x400),
        "CS.L outside long mode": dict(cs_l=1),
        "long mode without PAE": dict(long_mode, cr4=0),
        "long mode, CR3 beyond MAXPHYADDR 36": dict(long_mode, cr3=1 << 36),
        "APIC base reserved bit 0": dict(apic_base=0xFEE00901),
        "APIC base x2APIC without CPUID": dict(apic_base=0xFEE00D00),
        "APIC base x2APIC without enable": dict(apic_base=0xFEE00500),
    }
    for name, fields in cases.items():
        assert check_sregs(vcpu, **fields) == E, name
    # the VMM's CPUID widens MAXPHYADDR and offers x2APIC
    table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 3, "entries": 3})
    table.entries[0] = {"function": 0x80000000, "eax": 0x80000008}
    table.entries[1] = {"function": 0x80000008, "eax": 40}
    table.entries[2] = {"function": 1, "ecx": 1 << 21}
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    assert check_sregs(vcpu, **long_mode, cr3=1 << 36) == 0
    assert check_sregs(vcpu, **long_mode, cr3=1 << 40) == E
    assert check_sregs(vcpu, apic_base=0xFEE00D00) == 0
    # CR4.OSXSAVE needs XSAVE in the host and, once the VMM set a CPUID, in it
    assert check_sregs(vcpu, cr4=1 << 18) == E  # this CPUID has no XSAVE
    table.entries[2].ecx |= 1 << 26
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    assert check_sregs(vcpu, cr4=1 << 18) == (0 if "xsave" in host_flags() else E)
    # MAXPHYADDR is CPUID 0x80000008's as set, even 0, and a leaf without subleaves is
    # found whatever index its entry says (Linux's kvm_find_cpuid_entry): the fuzzer's
    # seed 2 met a table like this one, where kvm_amd refused this APIC base
    table.entries[0] = {"function": 0x80000000, "index": 1, "flags": 1, "eax": 0xBD4DF2F4}
    table.entries[1] = {"function": 0x80000008, "index": 0xA2439119, "eax": 0x80000000}
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    assert check_sregs(vcpu, apic_base=0xFEE00900) == E
    assert check_sregs(vcpu, apic_base=0) == 0


def test_hardware_values_are_checked_before_use(vcpu):
    """Lengths and segment numbers a backend read from the hardware index the core's
    tables: out-of-range values end in an internal error, never in a stray access."""
    pio = ffi.new("struct kvmp_pio *", {"string": True, "size": 1, "addr_size": 8,
                                         "seg": 7, "port": 0x80})
    assert lib.kvmp_exit_pio(vcpu, pio) == 0  # to the VMM
    run = abi_ffi.cast("struct kvmp_run *", int(ffi.cast("uintptr_t", vcpu.run)))
    assert run.exit_reason == abi.KVMP_EXIT_INTERNAL_ERROR
    assert run.internal.suberror == abi.KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
    pio.seg, pio.size = 3, 3
    assert lib.kvmp_exit_pio(vcpu, pio) == 0
    assert run.exit_reason == abi.KVMP_EXIT_INTERNAL_ERROR
    # a decode-assist length beyond 15 bytes: only 15 are used (here: a MOV store)
    insn = ffi.new("u8[256]", b"\x89\x03" + b"\x90" * 254)  # mov %eax, (%rbx)
    assert check_sregs(vcpu, cr0=0x11, cs_db=1) == 0  # 32-bit code
    assert lib.kvmp_exit_mmio(vcpu, 0x30000000, insn, 255) == 0
    assert run.exit_reason == abi.KVMP_EXIT_MMIO and run.mmio.len == 4 and run.mmio.is_write


def state_ioctl(vcpu, name: str, cdata) -> int:
    return lib.kvmp_vcpu_ioctl(vcpu, getattr(abi, "KVMP_" + name), ptr(cdata))


def test_vcpu_events_policy_as_linux(vcpu):
    """KVM_SET_VCPU_EVENTS: Linux's refusals and their order, what reaches the backend,
    and what KVM_GET_VCPU_EVENTS reports back (the subset Linux reports without an
    in-kernel irqchip or exception payloads)."""
    ev = abi_ffi.new("struct kvmp_vcpu_events *")
    assert state_ioctl(vcpu, "GET_VCPU_EVENTS", ev) == 0
    assert ev.flags == (abi.KVMP_VCPUEVENT_VALID_NMI_PENDING | abi.KVMP_VCPUEVENT_VALID_SHADOW |
                        abi.KVMP_VCPUEVENT_VALID_SMM)
    for flags, fields in ((0x40, {}), (abi.KVMP_VCPUEVENT_VALID_PAYLOAD, {}),
                          (0, {"injected": 1, "nr": 32}), (0, {"injected": 1, "nr": 2}),
                          (abi.KVMP_VCPUEVENT_VALID_SMM, {"smm": 1})):
        bad = abi_ffi.new("struct kvmp_vcpu_events *", {"flags": flags})
        for k, v in fields.items():
            setattr(bad.smi if k == "smm" else bad.exception, k, v)
        assert state_ioctl(vcpu, "SET_VCPU_EVENTS", bad) == -errno.EINVAL, (flags, fields)
    assert state_ioctl(vcpu, "GET_VCPU_EVENTS", ev) == 0 and ev.exception.nr == 0  # untouched
    # a pending exception without PAYLOAD is dropped (nr 2 is fine then)
    ev.exception.pending, ev.exception.nr = 1, 2
    assert state_ioctl(vcpu, "SET_VCPU_EVENTS", ev) == 0
    assert state_ioctl(vcpu, "GET_VCPU_EVENTS", ev) == 0
    assert (ev.exception.injected, ev.exception.pending, ev.exception.nr) == (0, 0, 2)
    # NMI injected behind an exception: one event an entry, the NMI is still reported injected
    ev = abi_ffi.new("struct kvmp_vcpu_events *", {"flags": abi.KVMP_VCPUEVENT_VALID_SHADOW})
    ev.exception.injected, ev.exception.nr, ev.exception.has_error_code = 1, 13, 1
    ev.exception.error_code, ev.nmi.injected, ev.interrupt.shadow = 0xABCD, 1, 1
    ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft = 1, 0x80, 1
    assert state_ioctl(vcpu, "SET_VCPU_EVENTS", ev) == 0
    back = abi_ffi.new("struct kvmp_vcpu_events *")
    assert state_ioctl(vcpu, "GET_VCPU_EVENTS", back) == 0
    assert (back.exception.injected, back.exception.nr,
            back.exception.error_code) == (1, 13, 0xABCD)
    assert (back.nmi.injected, back.nmi.pending) == (1, 0)
    # a soft interrupt cannot be injected without its length: reported as not injected
    assert (back.interrupt.injected, back.interrupt.nr, back.interrupt.shadow) == (0, 0x80, 3)
    # TRIPLE_FAULT without its capability: EINVAL, after the rest was taken (Linux's order)
    ev = abi_ffi.new("struct kvmp_vcpu_events *", {"flags": abi.KVMP_VCPUEVENT_VALID_TRIPLE_FAULT})
    ev.interrupt.injected, ev.interrupt.nr = 1, 0x22
    assert state_ioctl(vcpu, "SET_VCPU_EVENTS", ev) == -errno.EINVAL
    assert state_ioctl(vcpu, "GET_VCPU_EVENTS", back) == 0
    assert (back.exception.injected, back.interrupt.injected, back.interrupt.nr) == (0, 1, 0x22)
    assert state_ioctl(vcpu, "SET_VCPU_EVENTS", abi_ffi.cast("void *", 8)) == -errno.EFAULT


def test_debugregs_and_xcrs_policy_as_linux(vcpu):
    d = abi_ffi.new("struct kvmp_debugregs *", {"db": [1, 2, 3, 4], "dr6": 0xFFFF0FF0,
                                               "dr7": 0x400, "reserved": [7] * 9})
    assert state_ioctl(vcpu, "SET_DEBUGREGS", d) == 0  # reserved words are not checked
    for field in ("flags", "dr6", "dr7"):
        bad = abi_ffi.new("struct kvmp_debugregs *", {field: 1 if field == "flags" else 1 << 32})
        assert state_ioctl(vcpu, "SET_DEBUGREGS", bad) == -errno.EINVAL, field
    back = abi_ffi.new("struct kvmp_debugregs *")
    assert state_ioctl(vcpu, "GET_DEBUGREGS", back) == 0
    assert (list(back.db), back.dr7, list(back.reserved)) == ([1, 2, 3, 4], 0x400, [0] * 9)
    if "xsave" not in host_flags():
        return
    x = abi_ffi.new("struct kvmp_xcrs *", {"nr_xcrs": 2})
    x.xcrs[0] = {"xcr": 1, "value": 3}  # not XCR0: skipped
    x.xcrs[1] = {"xcr": 0, "value": 1}
    assert state_ioctl(vcpu, "SET_XCRS", x) == 0
    x.xcrs[1].value = 3  # SSE: not without a CPUID offering it
    assert state_ioctl(vcpu, "SET_XCRS", x) == -errno.EINVAL
    x.nr_xcrs = 1  # XCR1 only: nothing to set, no error
    assert state_ioctl(vcpu, "SET_XCRS", x) == 0


def test_xsave_policy_as_linux(vcpu):
    """KVM_SET_XSAVE: what Linux 6.1 takes (every component guests may use), what
    KVM_GET_XSAVE shows (x87, SSE and what the VMM's CPUID 0xd.0 offers); MXCSR checked
    when x87, SSE or AVX is in XSTATE_BV, shown only with SSE or AVX; components left out
    read as reset."""
    if "avx" not in host_flags() or "xsave" not in host_flags():
        pytest.skip("needs a host with XSAVE and AVX")  # the lab's CPU and this host have both

    def image(bv: int, mxcsr: int = 0x1F80, ymm0: bytes = b"") -> object:
        raw = bytearray(4096)
        raw[24:28] = mxcsr.to_bytes(4, "little")
        raw[512:520] = bv.to_bytes(8, "little")
        raw[576:576 + len(ymm0)] = ymm0
        x = abi_ffi.new("struct kvmp_xsave *")
        abi_ffi.memmove(x, bytes(raw), 4096)
        return x

    def get() -> bytes:
        got = abi_ffi.new("struct kvmp_xsave *")
        assert state_ioctl(vcpu, "GET_XSAVE", got) == 0
        return bytes(abi_ffi.buffer(got))

    assert state_ioctl(vcpu, "SET_XSAVE", image(0b111, ymm0=b"\x55" * 16)) == 0
    b = get()  # no CPUID: AVX is kept but not shown
    assert b[512] == 0b011 and b[576:592] == b"\0" * 16 and b[0:2] == b"\0\0"
    assert state_ioctl(vcpu, "SET_XSAVE", image(0, mxcsr=1 << 31)) == 0  # MXCSR not used
    assert state_ioctl(vcpu, "SET_XSAVE", image(0b100, mxcsr=1 << 31)) == -errno.EINVAL
    assert state_ioctl(vcpu, "SET_XSAVE", image(1 << 9)) == -errno.EINVAL  # not supported
    b = get()  # XSTATE_BV 0: everything in its reset state
    assert (b[0:2], b[24:26], b[512], b[576:592]) == (b"\x7f\x03", b"\x80\x1f", 0, b"\0" * 16)
    table = abi_ffi.new("struct kvmp_cpuid2 *", {"nent": 1, "entries": 1})
    table.entries[0] = {"function": 0xD, "index": 0, "eax": 0b111}
    assert lib.kvmp_vcpu_ioctl(vcpu, abi.KVMP_SET_CPUID2, ptr(table)) == 0
    assert state_ioctl(vcpu, "SET_XSAVE", image(0b111, ymm0=b"\x55" * 16)) == 0
    b = get()  # AVX offered: shown
    assert b[512] == 0b111 and b[576:592] == b"\x55" * 16
    assert state_ioctl(vcpu, "SET_XSAVE", image(0b001, mxcsr=0x1FA0)) == 0
    b = get()  # x87 only: MXCSR is shown in its reset state
    assert (b[512], b[24:26]) == (0b001, b"\x80\x1f")
