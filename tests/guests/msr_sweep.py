"""The MSR sweep micro-guest (bintest/guests/msr_sweep.S): RDMSR of every MSR in three
ranges, each answered with a value or #GP, read back from guest memory."""

from __future__ import annotations

from bintest.build import build, symbols
from pyhost import Hlt, Kvm
from pyhost.kvm import CpuidEntry
from pyhost.raw import load_raw
from pyhost.x86.modes import trapped_exception

RANGES = ((0x0, 0x2000), (0xC0000000, 0x2000), (0xC0010000, 0x2000))
READ, FAULT = 1, 2
# whose value is the host's (it changes between any two reads): compared as "readable" only
HOST_VALUES = {0x10: "TSC: the host's counter plus an offset"}
# what Linux KVM lets the guest reach without an exit: the CPU answers, not KVM (in the SVM
# lab, QEMU's emulated CPU reads 0 for an MSR it does not know); not compared
PASSED_THROUGH = {
    0xC0010130: "GHCB (SEV-ES): kvm_amd never intercepts it; kvmport intercepts every MSR",
}

Answers = dict[int, int | None]  # MSR -> value, or None for #GP


def sweep(kvm: Kvm, cpuid: list[CpuidEntry] | None = None, mcg_cap: int = 0) -> Answers:
    """Run the sweep on one VCPU (after KVM_X86_SETUP_MCE with mcg_cap if non-zero)."""
    sym = symbols("msr_sweep")
    count = sum(n for _, n in RANGES)
    with load_raw(kvm, build("msr_sweep").read_bytes(), "long", cpuid=cpuid) as g:
        if mcg_cap:
            g.vcpu.setup_mce(mcg_cap)
        for _ in range(1000):  # RDMSR is handled in the kernel: only the final HLT exits
            ex = g.vcpu.run()
            if not isinstance(ex, Hlt):
                continue
            rip = g.vcpu.get_regs().rip
            assert rip == sym["done"] + 1, (
                f"the sweep stopped at {rip:#x}: {trapped_exception(g.vm, g.vcpu)}")
            break
        else:
            raise AssertionError("the sweep never finished")
        status = g.vm.read(sym["STATUS"], count)
        values = g.vm.read(sym["VALUES"], 8 * count)
    answers: Answers = {}
    n = 0
    for first, length in RANGES:
        for index in range(first, first + length):
            assert status[n] in (READ, FAULT), f"MSR {index:#x} has no answer ({status[n]})"
            answers[index] = (int.from_bytes(values[8 * n:8 * n + 8], "little")
                              if status[n] == READ else None)
            n += 1
    return answers
