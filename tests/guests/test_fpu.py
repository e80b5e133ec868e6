"""FPU/SSE state is switched between guest and host on every entry and exit.

The host side loads XMM0-15 with its own pattern and issues KVM_RUN in one asm block
(no compiler-generated code can touch XMM in between), then reads XMM0-15 back.
"""

from __future__ import annotations

import pytest

from pyhost import Hlt
from pyhost.kvm import Cap

from ..quirks import HOST_PVM, LINUX_SET_FPU_LOST_ON_XSAVE
from .hostregs import VectorRun

_xmm = VectorRun("xmm")


def run_with_xmm(vcpu, pattern: bytes) -> bytes:
    return _xmm.run(vcpu, pattern)


def xmm_pattern(base: int) -> bytes:
    return b"".join(bytes([base + r]) * 16 for r in range(16))


def start_guest(raw_guest, guest_symbols):
    """The guest, with the VMM's XMM state set; returns it, its symbols and that state."""
    g = raw_guest("fpu_isolation")
    guest_start = xmm_pattern(0x20)
    fpu = g.vcpu.get_fpu()
    for r in range(16):
        fpu.xmm[r][0:16] = list(guest_start[16 * r:16 * r + 16])
    g.vcpu.set_fpu(fpu)
    return g, guest_symbols("fpu_isolation"), guest_start


def test_guest_and_host_never_see_each_others_sse_registers(raw_guest, guest_symbols):
    g, sym, _ = start_guest(raw_guest, guest_symbols)
    vcpu = g.vcpu
    h1 = xmm_pattern(0xC0)
    assert run_with_xmm(vcpu, h1) == h1, "the guest's XMM state leaked into the host"
    run = vcpu.kvm_run
    assert (run.exit_reason, run.io.port) == (2, 0x10)  # KVM_EXIT_IO at the guest's OUT

    h2 = xmm_pattern(0xE0)
    assert run_with_xmm(vcpu, h2) == h2, "the guest's XMM state leaked into the host"
    assert isinstance(vcpu.decode_exit(), Hlt)

    guest_own = g.vm.read(sym["pattern"], 256)
    assert g.vm.read(sym["after"], 256) == guest_own, "the host's XMM state leaked into the guest"
    assert bytes(b for r in range(16) for b in vcpu.get_fpu().xmm[r]) == guest_own


def test_guest_starts_with_the_state_kvm_set_fpu_gave(raw_guest, guest_symbols, device, kvm,
                                                      request):
    kvmport = kvm.check_extension(Cap.MMAP_VCPU)
    if HOST_PVM and device == "/dev/kvm":
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="kvm_pvm does not load KVM_SET_FPU state into the guest"))
    elif LINUX_SET_FPU_LOST_ON_XSAVE and not kvmport:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="Linux KVM's KVM_SET_FPU leaves XSTATE_BV clear (tests/quirks.py)"))
    g, sym, guest_start = start_guest(raw_guest, guest_symbols)
    assert run_with_xmm(g.vcpu, xmm_pattern(0xC0)) == xmm_pattern(0xC0)
    assert g.vm.read(sym["seen"], 256) == guest_start, "the guest saw the wrong XMM state"
