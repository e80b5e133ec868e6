"""The machine's exit switch on the host's device with tiny 32-bit guests put where the
bootfd kernel's entry is (a real kernel boot is far too slow here): console output through
the UART, power-off, triple fault, i8042 reset, interrupt-window handling, and the status
line of a quiet console."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pyhost.boot.linux import boot_spec
from pyhost.machine import Machine, Outcome
from pyhost.status import EXIT_GUEST_FAULT, EXIT_OK

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def machine(kvm):
    out: list[bytes] = []
    spec = boot_spec(ROOT / "bintest" / "bootfd.img")
    with Machine(kvm, spec, 32 << 20, output=out.append, log=lambda m: None) as m:
        m.out = out  # type: ignore[attr-defined]
        yield m


def put(m: Machine, code: str) -> None:
    m.vm.write(m.layout.plan.entry, bytes.fromhex(code))


def test_uart_output_then_power_off(machine):
    # mov dx,0x3f8; mov al,'O'; out dx,al; mov al,'K'; out dx,al; cli; hlt
    put(machine, "66baf803" "b04f" "ee" "b04b" "ee" "fa" "f4")
    outcome = machine.run()
    assert outcome.status == EXIT_OK and "power-off" in outcome.message
    assert b"".join(machine.out) == b"OK"


def test_triple_fault_is_a_guest_fault(machine):
    # lidt [entry+0x10] (an IDT of not-present gates, as bintest's triple_fault); ud2
    entry = machine.layout.plan.entry
    idtr = (0x7FF).to_bytes(2, "little") + (0x50000).to_bytes(4, "little")
    put(machine, "0f011d" + (entry + 0x10).to_bytes(4, "little").hex() + "0f0b")
    machine.vm.write(entry + 0x10, idtr)
    outcome = machine.run()
    assert outcome.status == EXIT_GUEST_FAULT and "triple-faulted" in outcome.message
    assert outcome.registers.startswith("rip=")


def test_i8042_reset_ends_cleanly(machine):
    put(machine, "b0fe" "e664" "ebfe")  # mov al,0xfe; out 0x64,al; jmp $
    outcome = machine.run()
    assert outcome.status == EXIT_OK and "i8042" in outcome.message


def test_pending_interrupt_waits_for_a_window(machine):
    pic, vcpu = machine.pic, machine.vcpu
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFE)):
        machine.bus.io_out(port, 1, value)
    machine._inject()
    assert not vcpu.request_interrupt_window
    pic.pulse(0)
    machine._inject()  # never run: not ready for injection, so ask for the window
    assert vcpu.request_interrupt_window and pic.pending()
    assert machine.stats.injected == 0


def run_logged(kvm, code: str, status_after: float, seconds: float) -> tuple[list[str], bytes]:
    """Run `code` at the kernel's entry for `seconds` with a quiet-console status line
    every `status_after` seconds; the lines logged and the console output."""
    logged: list[str] = []
    out: list[bytes] = []
    spec = boot_spec(ROOT / "bintest" / "bootfd.img")
    with Machine(kvm, spec, 32 << 20, output=out.append, log=logged.append,
                 status_after=status_after) as m:
        put(m, code)
        timer = threading.Timer(seconds, m.quit, (Outcome(EXIT_OK, "test over"),))
        timer.start()
        try:
            outcome = m.run()
        finally:
            timer.cancel()
    assert outcome.message == "test over", outcome
    return logged, b"".join(out)


def test_a_quiet_console_gets_periodic_status_lines(kvm):
    # 1: out 0x80,al (the POST port: an exit, no output); jmp 1b
    logged, out = run_logged(kvm, "e680" "ebfc", status_after=0.5, seconds=2.2)
    status = [ln for ln in logged if "console quiet" in ln]
    assert out == b"" and 2 <= len(status) <= 5, logged  # about every 0.5 s, not per exit
    assert all("exits/s" in ln and "guest running at rip=0x" in ln
               and "in protected mode" in ln for ln in status), status


def test_a_halted_guest_says_so(kvm):
    logged, _ = run_logged(kvm, "fb" "f4" "ebfd", status_after=0.3, seconds=1.2)  # sti; hlt
    status = [ln for ln in logged if "console quiet" in ln]
    assert status and all("halted, waiting for an interrupt" in ln and "(IF=1)" in ln
                          for ln in status), logged


def test_a_talking_console_gets_no_status_line(kvm):
    # mov dx,0x3f8; 1: mov al,'.'; out dx,al; jmp 1b
    logged, out = run_logged(kvm, "66baf803" "b02e" "ee" "ebfb", status_after=1.0, seconds=3.0)
    assert out.count(b".") > 10 and not [ln for ln in logged if "console quiet" in ln], logged
