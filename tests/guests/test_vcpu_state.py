"""VCPU state across a save and a restore, as QEMU's savevm/loadvm and migration do it:
KVM_GET_VCPU_EVENTS, DEBUGREGS, XSAVE and XCRS on one VCPU after an exit, the same SET on
a VCPU of a new VM holding a copy of the memory, and the guest goes on as if nothing had
happened; an exception injected with KVM_SET_VCPU_EVENTS reaches the guest's handler."""

from __future__ import annotations

from typing import Any

from pyhost import Cap, Hlt, Intr, IoOut, Kvm, Vcpu
from pyhost.exits import Exit
from pyhost.raw import DEFAULT_MEMORY
from pyhost.x86.modes import TrappedException, trapped_exception

GUEST = "vcpu_state_real"
DR0 = 0x12345678


def save(kvm: Kvm, vcpu: Vcpu) -> dict[str, Any]:
    """What a VMM saves of a VCPU, in the order QEMU reads it, after finishing the exit's
    I/O instruction with an immediate-exit KVM_RUN (Linux moves RIP past an OUT only on
    the next KVM_RUN, so the KVM API asks for this before saving)."""
    vcpu.kvm_run.immediate_exit = 1
    assert isinstance(vcpu.run(), Intr)
    state = {"regs": vcpu.get_regs(), "sregs": vcpu.get_sregs(), "xsave": vcpu.get_xsave(),
             "events": vcpu.get_vcpu_events(), "debugregs": vcpu.get_debugregs()}
    if kvm.check_extension(Cap.XCRS):
        state["xcrs"] = vcpu.get_xcrs()
    return state


def restore(vcpu: Vcpu, state: dict[str, Any]) -> None:
    """QEMU's order: registers, XSAVE, XCRS, sregs, then events and debug registers."""
    vcpu.set_regs(state["regs"])
    vcpu.set_xsave(state["xsave"])
    if "xcrs" in state:
        vcpu.set_xcrs(state["xcrs"])
    vcpu.set_sregs(state["sregs"])
    vcpu.set_vcpu_events(state["events"])
    vcpu.set_debugregs(state["debugregs"])


def run_until(vcpu: Vcpu, done: Any, limit: int = 200) -> list[Exit]:
    """Run, collecting the exits, until done(exit); the guest's loop exits on every pass."""
    seen: list[Exit] = []
    for _ in range(limit):
        ex = vcpu.run()
        seen.append(ex)
        if done(ex):
            return seen
    raise AssertionError(f"no end after {limit} exits: last {seen[-3:]}")


def nmi_reports(exits: list[Exit]) -> list[tuple[int, int]]:
    """(NMIs taken, handler depth) as the guest's NMI handler reported them."""
    return [(ex.data[0], ex.data[1]) for ex in exits if isinstance(ex, IoOut) and ex.port == 0x11]


def test_nmi_blocking_and_a_pending_nmi_survive_save_and_restore(kvm, raw_guest):
    """Inside its NMI handler the guest has NMIs blocked; a second NMI waits.  Saved there
    and restored in a new VM, the second NMI must still come, and only after the first
    handler's IRET (never nested), and DR0 must read what the guest wrote before."""
    g = raw_guest(GUEST)
    vcpu = g.vcpu
    assert vcpu.run() == IoOut(0x10, 1, 1, b"\0")
    vcpu.nmi()
    seen = run_until(vcpu, lambda ex: isinstance(ex, IoOut) and ex.port == 0x11)
    assert nmi_reports(seen) == [(1, 1)]
    events = vcpu.get_vcpu_events()
    assert (events.nmi.injected, events.nmi.pending, events.nmi.masked) == (0, 0, 1)
    vcpu.nmi()  # blocked: it must wait for the handler's IRET
    events = vcpu.get_vcpu_events()
    assert (events.nmi.injected, events.nmi.pending, events.nmi.masked) == (0, 1, 1)
    assert vcpu.get_debugregs().db[0] == DR0

    state = save(kvm, vcpu)
    memory = g.vm.read(0, DEFAULT_MEMORY)
    g2 = raw_guest(GUEST)
    g2.vm.write(0, memory)
    restore(g2.vcpu, state)
    back = g2.vcpu.get_vcpu_events()
    assert (back.nmi.injected, back.nmi.pending, back.nmi.masked) == (0, 1, 1)
    assert g2.vcpu.get_debugregs().db[0] == DR0

    seen = run_until(g2.vcpu, lambda ex: isinstance(ex, IoOut) and ex.port == 0x12)
    assert nmi_reports(seen) == [(2, 1)], seen
    assert seen[-1] == IoOut(0x12, 4, 1, DR0.to_bytes(4, "little"))
    assert isinstance(g2.vcpu.run(), Hlt)


def test_exception_injected_by_set_vcpu_events_reaches_the_guest(raw_guest):
    """KVM_SET_VCPU_EVENTS with an injected #GP and its error code, read back, then KVM_RUN:
    the guest takes exactly that exception where it stood, with that error code."""
    g = raw_guest("demo1_fact")
    vcpu = g.vcpu
    assert isinstance(vcpu.run(), Hlt)  # stopped at its final HLT, IDT still the VMM's
    rip = vcpu.get_regs().rip
    events = vcpu.get_vcpu_events()
    events.exception.injected = 1
    events.exception.nr = 13
    events.exception.has_error_code = 1
    events.exception.error_code = 0x1234
    vcpu.set_vcpu_events(events)
    back = vcpu.get_vcpu_events()
    assert (back.exception.injected, back.exception.nr, back.exception.has_error_code,
            back.exception.error_code) == (1, 13, 1, 0x1234)
    assert isinstance(vcpu.run(), Hlt)
    assert trapped_exception(g.vm, vcpu) == TrappedException(13, rip, 0x1234)
    after = vcpu.get_vcpu_events()
    assert after.exception.injected == 0  # delivered


def test_sse_state_survives_save_and_restore(kvm, raw_guest, guest_symbols):
    """fpu_isolation loads its pattern into XMM0-15 and exits; saved there and restored in a
    new VM (KVM_SET_XSAVE carries the registers), it must store the same pattern back."""
    g = raw_guest("fpu_isolation")
    ex = g.vcpu.run()
    assert isinstance(ex, IoOut) and ex.port == 0x10, ex
    state = save(kvm, g.vcpu)
    memory = g.vm.read(0, DEFAULT_MEMORY)
    g2 = raw_guest("fpu_isolation")
    g2.vm.write(0, memory)
    restore(g2.vcpu, state)
    assert isinstance(g2.vcpu.run(), Hlt)
    syms = guest_symbols("fpu_isolation")
    assert g2.vm.read(syms["after"], 256) == g2.vm.read(syms["pattern"], 256)
