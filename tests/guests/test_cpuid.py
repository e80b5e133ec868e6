"""KVM_GET_CPUID2 and the guest's CPUID agree, on every --device, as Linux's cpuid_test
requires: Linux applies the guest's state to its table (kvm_update_cpuid_runtime: OSXSAVE
from CR4, APIC from the APIC base, 0xd.0 EBX from XCR0), so what KVM_GET_CPUID2 returns is
what CPUID answers."""

from __future__ import annotations

import dataclasses
import errno

import pytest

from pyhost import CpuidEntry, Hlt, KvmError, Vcpu
from pyhost.cpuid import new_cpuid2
from pyhost.ioctl import kvm_ioctl
from pyhost.raw import RawGuest

XSAVE_LEGACY_AND_HEADER = 576  # the XSAVE area x87 and SSE need (XCR0 = 1 at reset)
OSXSAVE = 1 << 27  # CPUID 1 ECX
XSAVE = 1 << 26


def guest_cpuid(g: RawGuest, start: int, leaf: int, subleaf: int) -> CpuidEntry:
    """Run cpuid_real once more from its start: CPUID(leaf, subleaf) as the guest sees it."""
    vcpu: Vcpu = g.vcpu
    regs = vcpu.get_regs()
    regs.rip, regs.rax, regs.rcx = start, leaf, subleaf
    vcpu.set_regs(regs)
    assert isinstance(vcpu.run(), Hlt)
    r = vcpu.get_regs()
    return CpuidEntry(leaf, subleaf, 0, r.rax & 0xFFFFFFFF, r.rbx & 0xFFFFFFFF,
                      r.rcx & 0xFFFFFFFF, r.rdx & 0xFFFFFFFF)


def test_get_cpuid2_sizing(kvm, raw_guest):
    n = len(kvm.get_supported_cpuid())
    g = raw_guest("cpuid_real")  # the VCPU has the supported table: n entries
    small = new_cpuid2(n - 1)
    with pytest.raises(KvmError) as e:
        kvm_ioctl(g.vcpu.fd, "GET_CPUID2", small)
    assert e.value.errno == errno.E2BIG and small.nent == n - 1
    big = new_cpuid2(n + 3)
    kvm_ioctl(g.vcpu.fd, "GET_CPUID2", big)
    # Linux 6.1 leaves nent as given, later kernels (the host's 6.18) write the count
    assert big.nent in (n, n + 3) and big.entries[n].function == 0  # the rest untouched


def test_get_cpuid2_is_what_the_guest_sees(kvm, raw_guest):
    g = raw_guest("cpuid_real")
    start = g.vcpu.get_regs().rip
    table = g.vcpu.get_cpuid2(len(kvm.get_supported_cpuid()))
    assert {(e.function, e.index) for e in table} == {
        (e.function, e.index) for e in kvm.get_supported_cpuid()}
    for e in table:
        seen = guest_cpuid(g, start, e.function, e.index)
        assert (seen.eax, seen.ebx, seen.ecx, seen.edx) == (e.eax, e.ebx, e.ecx, e.edx), (
            f"CPUID {e.function:#x}.{e.index}: the guest sees {seen}, KVM_GET_CPUID2 says {e}")
    by_leaf = {(e.function, e.index): e for e in table}
    assert not by_leaf[1, 0].ecx & OSXSAVE  # CR4.OSXSAVE is clear at reset
    if (0xD, 0) in by_leaf:
        assert by_leaf[0xD, 0].ebx == XSAVE_LEGACY_AND_HEADER


def test_after_a_run_set_cpuid2_takes_only_the_same_table(kvm, raw_guest):
    """Linux's kvm_cpuid_check_equal (as cpuid_test's set_cpuid_after_run): the same table
    again is taken, a changed one is EINVAL; the fields that follow the guest's state are
    compared as the guest sees them."""
    g = raw_guest("cpuid_real")
    supported = kvm.get_supported_cpuid()
    guest_cpuid(g, g.vcpu.get_regs().rip, 0, 0)  # the guest ran
    table = g.vcpu.get_cpuid2(len(supported))
    g.vcpu.set_cpuid2(table)
    i = next(i for i, e in enumerate(table) if e.function == 1)
    flipped = dataclasses.replace(table[i], ecx=table[i].ecx ^ OSXSAVE)
    if table[i].ecx & XSAVE:  # OSXSAVE follows CR4, on a host with XSAVE (boot_cpu_has)
        g.vcpu.set_cpuid2([*table[:i], flipped, *table[i + 1:]])
    else:  # the VMX lab's CPU: nothing rewrites it, so it is a change like any other
        with pytest.raises(KvmError) as e:
            g.vcpu.set_cpuid2([*table[:i], flipped, *table[i + 1:]])
        assert e.value.errno == errno.EINVAL
    j = next(i for i, e in enumerate(table) if e.function == 7)
    changed = dataclasses.replace(table[j], ebx=table[j].ebx - 1)
    with pytest.raises(KvmError) as e:
        g.vcpu.set_cpuid2([*table[:j], changed, *table[j + 1:]])
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KvmError) as e:
        g.vcpu.set_cpuid2(table[:-1])
    assert e.value.errno == errno.EINVAL
