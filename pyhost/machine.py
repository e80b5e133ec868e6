"""`pyhost boot`'s machine: a PC with one VCPU, RAM from 0 and the PC devices of pyhost.hw,
and the exit switch that dispatches to them. What it boots comes from pyhost.boot.linux.

    spec = boot_spec_from_image(Path("bintest/bootfd.img"))     # or BootSpec(kernel=...)
    with Kvm() as kvm, Machine(kvm, spec, mem_size=64 << 20) as m:
        outcome = m.run()          # Outcome: how the guest ended
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import exits
from .boot import BootError
from .boot.linux import BootSpec, apply_layout, layout_linux
from .cpuid import CpuidEntry
from .hw.bus import Bus, Ignored, PciNoDevices, stderr_log
from .hw.console import Console
from .hw.i8042 import I8042
from .hw.pic import PicPair
from .hw.pit import Pit, PitTimer
from .hw.rtc import Cmos
from .hw.uart import COM1_IRQ, Uart8250
from .kvm import Kvm
from .status import EXIT_ERROR, EXIT_GUEST_FAULT, EXIT_INTERRUPTED, EXIT_OK
from .x86.registers import cpu_mode, format_registers

DEFAULT_MEMORY = 64 << 20
CPUID_APIC = 1 << 9  # leaf 1 EDX: on-chip local APIC
CPUID_X2APIC = 1 << 21  # leaf 1 ECX
STATUS_AFTER = 10.0  # seconds of a quiet console before a status line on stderr


def guest_cpuid(supported: list[CpuidEntry]) -> list[CpuidEntry]:
    """The device's supported CPUID without a local APIC (this PC has only the 8259s)."""
    out = []
    for e in supported:
        if e.function == 1:
            e = CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx,
                           e.ecx & ~CPUID_X2APIC, e.edx & ~CPUID_APIC)
        out.append(e)
    return out


def _write_stdout(data: bytes) -> None:
    os.write(1, data)


# ---- the machine --------------------------------------------------------------------------

@dataclass
class Outcome:
    """How a run ended: `status` 0 for a power-off or clean reset, else an error."""

    status: int
    message: str
    registers: str = ""


@dataclass
class Stats:
    exits: dict[str, int] = field(default_factory=dict)
    injected: int = 0
    started: float = 0.0
    first_output: float | None = None  # when the guest's first console byte came
    last_output: float = 0.0  # when the latest came (or the start)
    ended: float = 0.0


class Machine:
    """One VCPU, RAM from 0, and the PC devices; `run()` until the guest ends."""

    def __init__(self, kvm: Kvm, spec: BootSpec, mem_size: int = DEFAULT_MEMORY, *,
                 tsc_khz: int | None = None,
                 console: Console | None = None, output: Callable[[bytes], None] | None = None,
                 log: Callable[[str], None] = stderr_log,
                 status_after: float = STATUS_AFTER) -> None:
        """tsc_khz: the guest TSC's rate, passed to the kernel as tsc_early_khz= if its
        command line has room (then self.tsc_khz is it, else None). status_after: seconds
        of a quiet console after which run() logs a status line, and again every as many
        seconds while it stays quiet (0: never)."""
        self.cmdline = spec.cmdline
        self.tsc_khz: int | None = None
        if tsc_khz is not None:
            cmdline = f"{spec.cmdline} tsc_early_khz={tsc_khz}".strip()
            try:
                self.layout = layout_linux(spec.kernel, spec.initrd, cmdline, mem_size)
                self.cmdline, self.tsc_khz = cmdline, tsc_khz
            except BootError:
                pass  # no room on the command line (or a real error, raised just below)
        if self.tsc_khz is None:
            self.layout = layout_linux(spec.kernel, spec.initrd, spec.cmdline, mem_size)
        self.kvm = kvm
        self.spec = spec
        self.mem_size = mem_size
        self.log = log
        self.status_after = status_after
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stats = Stats()
        self.quit_reason: Outcome | None = None
        self.waiting = False  # the VCPU thread sleeps on cond (guest HLT with IF=1)
        self._status_at = 0.0  # when the last status line was logged
        self._status_exits = 0  # the exit count then
        self.vcpu_thread: int | None = None

        self.console = console
        out = output if output is not None else console.write if console is not None \
            else _write_stdout
        self.bus = Bus(log=log)
        self.pic = PicPair(on_change=self._irq_changed)
        self.pit = Pit(on_program=self._pit_programmed)
        self.timer = PitTimer(self.pit, self.lock, self._timer_fired)
        def uart_out(data: bytes) -> None:
            now = time.monotonic()
            if self.stats.first_output is None:
                self.stats.first_output = now
            self.stats.last_output = now
            out(data)

        self.uart = Uart8250(uart_out, set_irq=lambda level: self.pic.set_irq(COM1_IRQ, level))
        self.cmos = Cmos()
        self.i8042 = I8042(on_reset=self._reset)
        # The PC's devices, each at the ports its own module names (`ports`).
        for device in (self.pic, self.pit, self.uart, self.cmos, self.i8042, Ignored(),
                       PciNoDevices()):
            self.bus.register_device(device)

        self.vm = kvm.create_vm()
        try:
            self.vm.add_memory(0, mem_size)
            self.vcpu = self.vm.create_vcpu()
            self.vcpu.set_cpuid2(guest_cpuid(kvm.get_supported_cpuid()))
            apply_layout(self.vm, self.vcpu, self.layout)
        except BaseException:
            self.vm.close()
            raise

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        self.timer.stop()
        self.vm.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events from devices and threads (called with the lock held) ----------------------
    def _wake(self) -> None:
        """Make the VCPU thread look at the interrupt state soon."""
        if self.waiting:
            self.cond.notify_all()
        elif threading.get_ident() != self.vcpu_thread and \
                not self.vcpu.request_interrupt_window:
            self.vcpu.kick()

    def _irq_changed(self) -> None:
        if self.pic.pending():
            self._wake()

    def _pit_programmed(self) -> None:
        self.timer.wake()

    def _timer_fired(self) -> None:
        self.pic.pulse(0)

    def _reset(self) -> None:
        self.quit_reason = Outcome(EXIT_OK, "the guest reset the machine (i8042 reset)")

    def quit(self, outcome: Outcome) -> None:
        """From any thread: stop the run with `outcome`."""
        with self.lock:
            if self.quit_reason is None:
                self.quit_reason = outcome
            self.cond.notify_all()
            if threading.get_ident() != self.vcpu_thread:
                self.vcpu.kick()

    def console_input(self, data: bytes) -> None:
        with self.lock:
            self.uart.receive(data)

    # -- the run loop ---------------------------------------------------------------------
    def _inject(self) -> None:
        vcpu = self.vcpu
        if not self.pic.pending():
            if vcpu.request_interrupt_window:
                vcpu.request_interrupt_window = False
            return
        if vcpu.ready_for_interrupt_injection:
            vcpu.interrupt(self.pic.acknowledge())
            self.stats.injected += 1
            vcpu.request_interrupt_window = self.pic.pending()
        else:
            vcpu.request_interrupt_window = True

    def registers(self) -> str:
        return f"{format_registers(self.vcpu)}; {self.pic.describe()}"

    def run(self) -> Outcome:
        """Run the guest until it powers off, resets, faults or the user quits."""
        self.vcpu_thread = threading.get_ident()
        self.stats.started = self.stats.last_output = time.monotonic()
        self.timer.start()
        if self.console is not None:
            self.console.on_input = self.console_input
            self.console.on_quit = lambda: self.quit(Outcome(EXIT_OK, "quit (Ctrl-A x)"))
            self.console.start()
        try:
            return self._loop()
        except KeyboardInterrupt:  # Ctrl-C or SIGINT: say where the guest was
            return Outcome(EXIT_INTERRUPTED, "interrupted", self.registers())
        finally:
            self.stats.ended = time.monotonic()
            self.timer.stop()
            if self.console is not None:
                self.console.stop()

    def _loop(self) -> Outcome:
        vcpu, bus, lock, counts = self.vcpu, self.bus, self.lock, self.stats.exits
        while True:
            if self.quit_reason is None:  # a quit ends the run without a last status line
                self._maybe_status()  # after the last exit's output, if any, went out
            with lock:
                if self.quit_reason is not None:
                    return self.quit_reason
                self._inject()
            ex = vcpu.run()
            kind = type(ex).__name__
            counts[kind] = counts.get(kind, 0) + 1
            with lock:
                match ex:
                    case exits.IoOut(port, size, _, data):
                        bus.io_out_data(port, size, data)
                    case exits.IoIn(port, size, _, data):
                        bus.io_in_data(port, size, data)
                    case exits.MmioRead(address, data):
                        bus.mmio_read(address, data)
                    case exits.MmioWrite(address, data):
                        bus.mmio_write(address, data)
                    case exits.IrqWindowOpen() | exits.Intr():
                        pass
                    case exits.SetTpr():  # the PC has no local APIC: no priority to apply
                        pass
                    case exits.Hlt():
                        if not vcpu.if_flag:
                            return Outcome(EXIT_OK, "the guest halted with interrupts off "
                                                    "(power-off)")
                        self._halt()
                    case exits.Shutdown():
                        return Outcome(EXIT_GUEST_FAULT, "the guest triple-faulted "
                                       "(KVM_EXIT_SHUTDOWN)", self.registers())
                    case _:
                        return Outcome(EXIT_ERROR, f"unhandled exit {ex!r}", self.registers())

    def _halt(self) -> None:
        """HLT with interrupts on: sleep until an interrupt is pending (or a quit)."""
        self.waiting = True
        try:
            while not self.pic.pending() and self.quit_reason is None:
                self.cond.wait(self.status_after or None)
                self._maybe_status(halted=True)
        finally:
            self.waiting = False

    def _maybe_status(self, halted: bool = False) -> None:
        """A silent boot says what it is doing: once the console has been quiet for
        status_after seconds, and every status_after seconds while it stays quiet, log the
        time, the exit rate since the last line and where the guest is (VCPU thread only:
        it reads the registers)."""
        if not self.status_after:
            return
        now = time.monotonic()
        s = self.stats
        if now - s.last_output < self.status_after or now - self._status_at < self.status_after:
            return
        since = max(self._status_at, s.started)
        total = sum(s.exits.values())
        rate = (total - self._status_exits) / max(now - since, 1e-9)
        self._status_at, self._status_exits = now, total
        r, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        where = "halted, waiting for an interrupt" if halted else "running"
        self.log(f"{now - s.started:.0f} s, console quiet for {now - s.last_output:.0f} s: "
                 f"{rate:.0f} exits/s, {s.injected} interrupts injected; guest {where} at "
                 f"rip={r.rip:#x} in {cpu_mode(sregs)} mode (IF={r.rflags >> 9 & 1})")

    def describe(self) -> str:
        """What is booted, on what: the line `pyhost boot -v` starts with."""
        k, layout = self.layout.kernel, self.layout
        return (f"booting {self.spec.source or 'kernel'}: Linux {k.kernel_version or '?'}, "
                f"protocol {k.header.version_str}, {'64' if layout.long_mode else '32'}-bit "
                f"entry at {layout.plan.entry:#x}, initrd {len(self.spec.initrd)} bytes, "
                f"{self.mem_size >> 20} MiB, on {self.kvm.path}; cmdline {self.cmdline!r}")

    def summary(self) -> str:
        s = self.stats
        secs = max(s.ended - s.started, 1e-9)
        total = sum(s.exits.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.exits.items(), key=lambda kv: -kv[1]))
        first = "no console output" if s.first_output is None else \
            f"first console output at {s.first_output - s.started:.2f} s"
        ports = sorted(self.bus.port_counts.items(), key=lambda kv: -kv[1])[:8]
        top = " ".join(f"{p:#x}:{n}" for p, n in ports)
        return (f"{secs:.2f} s ({first}), {total} exits ({total / secs:.0f}/s: {kinds}; "
                f"busiest ports {top}), {s.injected} interrupts injected, "
                f"{self.timer.fired} timer ticks")
