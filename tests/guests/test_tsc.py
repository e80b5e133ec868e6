"""IA32_TSC (0x10) and IA32_TSC_ADJUST (0x3b), written by the guest and by the VMM, on every
--device: Linux's rules (x86.c, kvm_set_msr_common), which Linux's tsc_msrs_test checks too.
The guest's writes of either move both; the VMM's writes set one alone."""

from __future__ import annotations

import dataclasses

import pytest

from pyhost import CpuidEntry, Hlt, IoOut, Kvm, Vcpu

from ..quirks import HOST_PVM_IGNORES_TSC_WRITE

TSC, TSC_ADJUST = 0x10, 0x3B
pvm_ignores_tsc_write = pytest.mark.xfail(
    HOST_PVM_IGNORES_TSC_WRITE, strict=True, reason="kvm_pvm ignores the VMM's TSC write")
UNIT = 1 << 30  # values are compared in these units: the TSC runs on between the steps
TSC_ADJUST_CPUID = 1 << 1  # CPUID 7.0 EBX


def units(value: int) -> int:
    """A TSC value to the nearest UNIT, signed (TSC_ADJUST may go negative)."""
    if value >= 1 << 63:
        value -= 1 << 64
    return (value + UNIT // 2) // UNIT


# The VMM sets the TSC to this many units first. Not 0 nor near the TSC's course: Linux
# takes such a write as "synchronize with the VM's other VCPUs" (kvm_synchronize_tsc).
# The guest then only moves its TSC forward (to 2000 units, then by its TSC_ADJUST write
# of 1500 units): where Linux finds the host's TSC unstable (the SVM lab) it catches a
# VCPU that changed CPUs up to the VMM's last TSC write, never back (kvm_guest_time_update).
START = 1000


def start(vcpu: Vcpu) -> None:
    """The VMM's TSC write: it leaves TSC_ADJUST as it is."""
    assert vcpu.set_msrs({TSC: START * UNIT}) == 1
    assert host(vcpu) == (START, 0)


def host(vcpu: Vcpu) -> tuple[int, int]:
    m = vcpu.get_msrs([TSC, TSC_ADJUST])
    assert len(m) == 2, f"KVM_GET_MSRS stopped: {m}"
    return units(m[TSC]), units(m[TSC_ADJUST])


def stop(vcpu: Vcpu) -> int:
    """Run to the guest's next OUT to port 0x80; what it read back, in EDX:EAX."""
    ex = vcpu.run()
    assert isinstance(ex, IoOut) and ex.port == 0x80, ex
    r = vcpu.get_regs()
    return (r.rdx & 0xFFFFFFFF) << 32 | (r.rax & 0xFFFFFFFF)


def cpuid_with_tsc_adjust(kvm: Kvm, offered: bool) -> list[CpuidEntry]:
    entries = kvm.get_supported_cpuid()
    i = next(i for i, e in enumerate(entries) if e.function == 7 and e.index == 0)
    assert entries[i].ebx & TSC_ADJUST_CPUID, "TSC_ADJUST missing from KVM_GET_SUPPORTED_CPUID"
    if not offered:
        entries[i] = dataclasses.replace(entries[i], ebx=entries[i].ebx & ~TSC_ADJUST_CPUID)
    return entries


@pvm_ignores_tsc_write
def test_tsc_and_tsc_adjust_move_each_other(kvm, raw_guest):
    g = raw_guest("tsc_adjust_real", cpuid=cpuid_with_tsc_adjust(kvm, True))
    vcpu = g.vcpu
    assert vcpu.get_msrs([TSC_ADJUST]) == {TSC_ADJUST: 0}
    start(vcpu)

    # the guest's TSC := 2000 units: TSC_ADJUST gains what that added
    assert units(stop(vcpu)) == 2000 - START
    assert host(vcpu) == (2000, 2000 - START)
    # the guest's TSC_ADJUST := 1500 units: the TSC gains what that added
    assert units(stop(vcpu)) == 2000 + 1500 - (2000 - START)
    assert host(vcpu) == (2500, 1500)
    assert vcpu.get_msrs([TSC_ADJUST]) == {TSC_ADJUST: 1500 * UNIT}

    # the VMM's TSC write leaves TSC_ADJUST, its TSC_ADJUST write leaves the TSC
    assert vcpu.set_msrs({TSC: 3000 * UNIT}) == 1
    assert host(vcpu) == (3000, 1500)
    assert vcpu.set_msrs({TSC_ADJUST: 123456 * UNIT}) == 1
    assert vcpu.get_msrs([TSC_ADJUST]) == {TSC_ADJUST: 123456 * UNIT}
    assert host(vcpu)[0] == 3000
    assert vcpu.set_msrs({TSC_ADJUST: 1500 * UNIT}) == 1

    assert isinstance(vcpu.run(), Hlt)
    r = vcpu.get_regs()
    assert (r.rdi & 0xFFFFFFFF) << 32 | (r.rsi & 0xFFFFFFFF) == 1500 * UNIT
    assert units((r.rdx & 0xFFFFFFFF) << 32 | (r.rax & 0xFFFFFFFF)) == 3000


@pvm_ignores_tsc_write
def test_tsc_adjust_writes_are_dropped_without_its_cpuid_bit(kvm, raw_guest):
    g = raw_guest("tsc_adjust_real", cpuid=cpuid_with_tsc_adjust(kvm, False))
    vcpu = g.vcpu
    start(vcpu)
    # a guest TSC write still moves TSC_ADJUST (Linux: not tied to the CPUID bit)
    assert units(stop(vcpu)) == 2000 - START
    # its TSC_ADJUST write is dropped, without #GP: the TSC reads on from 2000 units
    assert units(stop(vcpu)) == 2000
    assert host(vcpu) == (2000, 2000 - START)
    # the VMM's is dropped as well, and still taken (KVM_SET_MSRS counts it)
    assert vcpu.set_msrs({TSC_ADJUST: 123456 * UNIT}) == 1
    assert host(vcpu) == (2000, 2000 - START)


@pytest.mark.parametrize("index", [TSC, TSC_ADJUST])
def test_msr_index_list_names_the_tsc_msrs(kvm, index):
    assert index in kvm.get_msr_index_list()
