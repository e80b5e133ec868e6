"""`pyhost boot`: a PC with one VCPU that boots a Linux bzImage by the 32/64-bit boot
protocol, and the exit switch that dispatches to the device models in pyhost.hw.

    spec = boot_spec_from_image(Path("bintest/bootfd.img"))     # or BootSpec(kernel=...)
    with Kvm() as kvm, Machine(kvm, spec, mem_size=64 << 20) as m:
        outcome = m.run()          # Outcome: how the guest ended

Guest-physical layout (below 1 MiB, the kernel from 1 MiB up, the initrd at the top):
  0x1000  the boot GDT (flat code at 0x10, flat data at 0x18)
  0x7000  the zero page (boot_params);  0x20000  the command line
  0x30000 identity page tables for a 64-bit entry (PML4, PDPT, one PD per GiB)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import exits
from .boot import BootError
from .boot.bootcfg import find_boot_entry
from .boot.bzimage import (
    BOOT_CS,
    BOOT_DS,
    BzImage,
    LoadPlan,
    boot_gdt,
    build_boot_params,
    entry_registers,
    plan_load,
)
from .boot.fat import FatImage
from .cpuid import CpuidEntry
from .errors import PyhostError
from .hw.bus import Bus, Ignored, PciNoDevices, stderr_log
from .hw.console import Console
from .hw.i8042 import I8042
from .hw.pic import PicPair
from .hw.pit import Pit, PitTimer
from .hw.rtc import Cmos
from .hw.uart import COM1_BASE, COM1_IRQ, Uart8250
from .kvm import Kvm
from .vcpu import Vcpu
from .vm import PAGE_SIZE, Vm
from .x86.modes import identity_page_tables, set_flat_mode

DEFAULT_MEMORY = 64 << 20
BOOT_GDT_ADDR = 0x1000
PAGE_TABLES_ADDR = 0x30000
PAGE_TABLES_END = 0x7F000  # below the EBDA; room for 77 PDs (77 GiB)
CPUID_APIC = 1 << 9  # leaf 1 EDX: on-chip local APIC
CPUID_X2APIC = 1 << 21  # leaf 1 ECX


@dataclass
class BootSpec:
    """What to boot: the kernel image, an initrd, the command line, and where they came from."""

    kernel: bytes
    initrd: bytes = b""
    cmdline: str = ""
    source: str = ""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PyhostError(f"cannot read {what} {path}: {e.strerror}") from None


def boot_spec_from_image(image: Path, label: str | None = None) -> BootSpec:
    """The default (or `label`) entry of the boot config on a FAT disk image."""
    fs = FatImage.from_disk(_read(image, "image"))
    entry = find_boot_entry(fs, label)
    initrd = b"".join(fs.read_file(p) for p in entry.initrds)
    return BootSpec(fs.read_file(entry.kernel), initrd, entry.cmdline,
                    f"{image.name}: {entry.config} label {entry.label!r} ({entry.kernel})")


def boot_spec(image: Path | None, kernel: Path | None = None, initrd: Path | None = None,
              append: str | None = None, label: str | None = None) -> BootSpec:
    """From the command line's pieces: an image's boot entry, overridden by --kernel,
    --initrd; --append adds to the command line."""
    if image is None and kernel is None:
        raise PyhostError("nothing to boot: give an IMAGE or --kernel")
    spec = boot_spec_from_image(image, label) if image is not None and kernel is None \
        else BootSpec(b"", source="")
    if kernel is not None:
        spec.kernel = _read(kernel, "kernel")
        spec.source = str(kernel)
        spec.cmdline = ""
        spec.initrd = b""
    if initrd is not None:
        spec.initrd = _read(initrd, "initrd")
    if append:
        spec.cmdline = f"{spec.cmdline} {append}".strip()
    return spec


# ---- the loader -------------------------------------------------------------------------

@dataclass
class BootLayout:
    """Everything the loader puts in guest memory and registers, computed without a VM."""

    kernel: BzImage
    plan: LoadPlan
    writes: list[tuple[int, bytes]]  # (guest-physical address, bytes)
    long_mode: bool
    gdt: bytes
    cr3: int
    regs: dict[str, int]


def layout_linux(kernel_bytes: bytes, initrd: bytes, cmdline: str, mem_size: int) -> BootLayout:
    """Plan a Linux boot (boot protocol 2.02+): the kernel at its load address, the initrd
    as high as the kernel allows, the command line, the zero page with an e820 map, the
    boot GDT and, for a 64-bit entry, identity page tables covering RAM."""
    if mem_size % PAGE_SIZE:
        raise BootError(f"memory size {mem_size:#x} is not a whole number of pages")
    kernel = BzImage(kernel_bytes)
    plan = plan_load(kernel, mem_size, cmdline, len(initrd))
    zero_page = build_boot_params(kernel, plan)
    long_mode = plan.entry_64
    gdt = boot_gdt(long_mode)
    writes = [(plan.kernel_addr, kernel.protected_mode), (plan.cmdline_addr, plan.cmdline),
              (plan.zero_page_addr, zero_page), (BOOT_GDT_ADDR, gdt)]
    if initrd:
        writes.append((plan.initrd_addr, initrd))
    cr3 = 0
    if long_mode:
        tables = identity_page_tables(PAGE_TABLES_ADDR, mem_size)
        if PAGE_TABLES_ADDR + len(tables) > PAGE_TABLES_END:
            most = (PAGE_TABLES_END - PAGE_TABLES_ADDR) // PAGE_SIZE - 2
            raise BootError(f"too much memory for a 64-bit entry: {mem_size >> 30} GiB "
                            f"(the identity map holds {most} GiB)")
        writes.append((PAGE_TABLES_ADDR, tables))
        cr3 = PAGE_TABLES_ADDR
    return BootLayout(kernel, plan, writes, long_mode, gdt, cr3, entry_registers(plan))


def apply_layout(vm: Vm, vcpu: Vcpu, layout: BootLayout) -> None:
    """Write the layout into guest memory and load the entry state into the VCPU:
    flat segments (CS=0x10, DS=ES=SS=0x18) from the boot GDT, paging off (32-bit entry) or
    on with the identity map (64-bit), interrupts off, ESI/RSI = the zero page."""
    for addr, data in layout.writes:
        vm.write(addr, data)
    sregs = vcpu.get_sregs()
    set_flat_mode(sregs, long_mode=layout.long_mode, code_selector=BOOT_CS,
                  data_selector=BOOT_DS, cr3=layout.cr3)
    sregs.gdt.base, sregs.gdt.limit = BOOT_GDT_ADDR, len(layout.gdt) - 1
    sregs.idt.base, sregs.idt.limit = 0, 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for name, value in layout.regs.items():
        setattr(regs, name, value)
    vcpu.set_regs(regs)


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


MSR_IA32_TSC = 0x10
TSC_MAX_ERROR_PPM = 200
TSC_PLAUSIBLE_KHZ = (100_000, 10_000_000)


@dataclass(frozen=True)
class TscMeasurement:
    khz: int
    error_ppm: float  # bound from the ioctl brackets at both ends


def measure_tsc_khz(vcpu: Vcpu, duration: float = 0.25, longest: float = 2.0,
                    max_error_ppm: float = TSC_MAX_ERROR_PPM,
                    tries: int = 5) -> TscMeasurement | None:
    """The guest's TSC rate, measured: the guest TSC (KVM_GET_MSRS of IA32_TSC, which the
    device computes from the host TSC and the VCPU's offset) read at two host times on
    the monotonic clock. Each read is bracketed by clock reads; the tightest of `tries`
    brackets at each end bounds the error, and the second end is taken later (up to
    `longest` seconds) until the bound is within max_error_ppm. None if the device cannot
    read the TSC."""

    def sample() -> tuple[int, int, int] | None:
        best: tuple[int, int, int] | None = None
        for _ in range(tries):
            t0 = time.monotonic_ns()
            value = vcpu.get_msrs([MSR_IA32_TSC]).get(MSR_IA32_TSC)
            t1 = time.monotonic_ns()
            if value is None:
                return None
            if best is None or t1 - t0 < best[2]:
                best = (value, (t0 + t1) // 2, t1 - t0)
        return best

    try:
        a = sample()
        if a is None:
            return None
        deadline = a[1] + int(longest * 1e9)
        time.sleep(duration)
        while True:
            b = sample()
            if b is None or b[1] <= a[1] or b[0] <= a[0]:
                return None
            elapsed_ns = b[1] - a[1]
            result = TscMeasurement(round((b[0] - a[0]) * 1_000_000 / elapsed_ns),
                                    (a[2] + b[2]) / 2 / elapsed_ns * 1e6)
            if result.error_ppm <= max_error_ppm or b[1] >= deadline:
                return result
            time.sleep(min(duration, max(0.0, (deadline - b[1]) / 1e9)))
    except PyhostError:
        return None


def tsc_usable(tsc: TscMeasurement | None) -> str | None:
    """Why the measurement should not be passed to the guest, or None if it should."""
    if tsc is None:
        return "not readable"
    if tsc.error_ppm > TSC_MAX_ERROR_PPM:
        return f"too imprecise (over {TSC_MAX_ERROR_PPM} ppm)"
    if not TSC_PLAUSIBLE_KHZ[0] <= tsc.khz <= TSC_PLAUSIBLE_KHZ[1]:
        return "implausible for a PC's TSC (100 MHz to 10 GHz)"
    return None


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
    ended: float = 0.0


EXIT_OK, EXIT_ERROR, EXIT_GUEST_FAULT, EXIT_INTERRUPTED = 0, 1, 3, 130


class Machine:
    """One VCPU, RAM from 0, and the PC devices; `run()` until the guest ends."""

    def __init__(self, kvm: Kvm, spec: BootSpec, mem_size: int = DEFAULT_MEMORY, *,
                 console: Console | None = None, output: Callable[[bytes], None] | None = None,
                 log: Callable[[str], None] = stderr_log,
                 layout: BootLayout | None = None) -> None:
        self.layout = layout if layout is not None else \
            layout_linux(spec.kernel, spec.initrd, spec.cmdline, mem_size)
        self.kvm = kvm
        self.spec = spec
        self.mem_size = mem_size
        self.log = log
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stats = Stats()
        self.quit_reason: Outcome | None = None
        self.waiting = False  # the VCPU thread sleeps on cond (guest HLT with IF=1)
        self.vcpu_thread: int | None = None

        self.console = console
        out = output if output is not None else console.write if console is not None \
            else _write_stdout
        self.bus = Bus(log=log)
        self.pic = PicPair(on_change=self._irq_changed)
        self.pit = Pit(on_program=self._pit_programmed)
        self.timer = PitTimer(self.pit, self.lock, self._timer_fired)
        def uart_out(data: bytes) -> None:
            if self.stats.first_output is None:
                self.stats.first_output = time.monotonic()
            out(data)

        self.uart = Uart8250(uart_out, set_irq=lambda level: self.pic.set_irq(COM1_IRQ, level))
        self.cmos = Cmos()
        self.i8042 = I8042(on_reset=self._reset)
        ignored = Ignored()
        self.bus.register_ports(PicPair.MASTER_PORT, 2, self.pic)
        self.bus.register_ports(PicPair.SLAVE_PORT, 2, self.pic)
        self.bus.register_ports(Pit.BASE, 4, self.pit)
        self.bus.register_ports(Pit.PORT_B, 1, self.pit)
        self.bus.register_ports(COM1_BASE, 8, self.uart)
        self.bus.register_ports(0x70, 2, self.cmos)
        self.bus.register_ports(0x60, 1, self.i8042)
        self.bus.register_ports(0x64, 1, self.i8042)
        self.bus.register_ports(0x80, 1, ignored)
        self.bus.register_ports(0xED, 1, ignored)
        self.bus.register_ports(PciNoDevices.ADDRESS, 8, PciNoDevices())

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
        r, s = self.vcpu.get_regs(), self.vcpu.get_sregs()
        return (f"rip={r.rip:#x} rsp={r.rsp:#x} rflags={r.rflags:#x} rax={r.rax:#x} "
                f"rbx={r.rbx:#x} rcx={r.rcx:#x} rdx={r.rdx:#x} rsi={r.rsi:#x} rdi={r.rdi:#x} "
                f"cr0={s.cr0:#x} cr2={s.cr2:#x} cr3={s.cr3:#x} cr4={s.cr4:#x} "
                f"efer={s.efer:#x} cs={s.cs.selector:#x}; {self.pic.describe()}")

    def run(self) -> Outcome:
        """Run the guest until it powers off, resets, faults or the user quits."""
        self.vcpu_thread = threading.get_ident()
        self.stats.started = time.monotonic()
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
                self.cond.wait()
        finally:
            self.waiting = False

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


def describe_spec(spec: BootSpec, layout: BootLayout, kvm: Kvm, mem_size: int) -> str:
    k = layout.kernel
    return (f"booting {spec.source or 'kernel'}: Linux {k.kernel_version or '?'}, protocol "
            f"{k.header.version_str}, {'64' if layout.long_mode else '32'}-bit entry at "
            f"{layout.plan.entry:#x}, initrd {len(spec.initrd)} bytes, {mem_size >> 20} MiB, "
            f"on {kvm.path}; cmdline {spec.cmdline!r}")


