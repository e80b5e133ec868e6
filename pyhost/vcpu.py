"""The VCPU fd: registers, the run area, interrupts and `run()` with typed exits."""

from __future__ import annotations

import mmap
import os
import signal
import sys
import threading
from typing import Any, Literal

from . import exits
from .abi import constants, ffi, lib
from .cpuid import CpuidEntry, cpuid_entries, new_cpuid2
from .errors import KvmError, PyhostError
from .ioctl import close_fd, kvm_ioctl

EXIT = constants("EXIT_")
# The signal that kicks a VCPU out of KVM_RUN; its handler (in C) does nothing.
KICK_SIGNAL = signal.SIGUSR1
_kick_installed = False
_kick_lock = threading.Lock()


def _install_kick_handler() -> None:
    global _kick_installed
    with _kick_lock:
        if not _kick_installed:
            err = lib.kvmp_install_kick_handler(KICK_SIGNAL)
            if err:
                raise PyhostError(f"cannot install the VCPU kick handler: {os.strerror(-err)}")
            _kick_installed = True


class Vcpu:
    """A virtual CPU: create it with `Vm.create_vcpu()`; run it on one thread at a time."""

    def __init__(self, fd: int, vcpu_id: int, mmap_size: int,
                 run_area: Literal["mmap", "ioctl"] = "mmap") -> None:
        self.fd = fd
        self.id = vcpu_id
        self.run_area = run_area
        self._map: mmap.mmap | None = None
        self._ioctl_map: tuple[Any, int] | None = None
        try:
            if run_area == "mmap":
                self._map = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE)
                self._cbuf = ffi.from_buffer(self._map)
                base = ffi.cast("char *", self._cbuf)
            elif run_area == "ioctl":
                req = ffi.new("struct kvmp_mmap_vcpu *")
                kvm_ioctl(fd, "MMAP_VCPU", req)
                base = ffi.cast("char *", req.addr)
                self._ioctl_map = (base, req.size)
            else:
                raise PyhostError(f"run_area must be 'mmap' or 'ioctl', not {run_area!r}")
        except BaseException:
            close_fd(fd)
            raise
        self._base = base
        self.kvm_run: Any = ffi.cast("struct kvmp_run *", base)
        self._run_thread: int | None = None
        _install_kick_handler()

    def fileno(self) -> int:
        return self.fd

    def drain_coalesced(self) -> list[tuple[int, bytes, bool]]:
        """Empty the VM's coalesced-MMIO ring (the page at KVM_COALESCED_MMIO_PAGE_OFFSET of
        this VCPU's mapping): the batched writes in order, as (address, data, is_pio)."""
        ring = ffi.cast("struct kvmp_coalesced_mmio_ring *",
                        self._base + lib.KVMP_COALESCED_MMIO_PAGE_OFFSET * mmap.PAGESIZE)
        slots = (mmap.PAGESIZE - ffi.sizeof("struct kvmp_coalesced_mmio_ring")) // \
            ffi.sizeof("struct kvmp_coalesced_mmio")
        out = []
        while ring.first != ring.last:
            e = ring.coalesced_mmio[ring.first]
            out.append((int(e.phys_addr), bytes(ffi.buffer(e.data, min(e.len, 8))), bool(e.pio)))
            ring.first = (ring.first + 1) % slots
        return out

    # -- registers --------------------------------------------------------
    def _get(self, ioctl: str, ctype: str) -> Any:
        value = ffi.new(ctype + " *")
        kvm_ioctl(self.fd, ioctl, value)
        return value

    def get_regs(self) -> Any:
        """KVM_GET_REGS: a struct kvmp_regs (fields rax..r15, rip, rflags)."""
        return self._get("GET_REGS", "struct kvmp_regs")

    def set_regs(self, regs: Any) -> None:
        kvm_ioctl(self.fd, "SET_REGS", regs)

    def get_sregs(self) -> Any:
        """KVM_GET_SREGS: segments, descriptor tables, control registers, EFER."""
        return self._get("GET_SREGS", "struct kvmp_sregs")

    def set_sregs(self, sregs: Any) -> None:
        kvm_ioctl(self.fd, "SET_SREGS", sregs)

    def get_fpu(self) -> Any:
        return self._get("GET_FPU", "struct kvmp_fpu")

    def set_fpu(self, fpu: Any) -> None:
        kvm_ioctl(self.fd, "SET_FPU", fpu)

    # -- state a VMM saves and restores (savevm, migration) ------------------
    def get_vcpu_events(self) -> Any:
        """KVM_GET_VCPU_EVENTS: a struct kvmp_vcpu_events (injected exception, interrupt,
        NMI injected/pending/masked, interrupt shadow; `flags` says which fields are valid)."""
        return self._get("GET_VCPU_EVENTS", "struct kvmp_vcpu_events")

    def set_vcpu_events(self, events: Any) -> None:
        kvm_ioctl(self.fd, "SET_VCPU_EVENTS", events)

    def get_debugregs(self) -> Any:
        """KVM_GET_DEBUGREGS: a struct kvmp_debugregs (db[4], dr6, dr7)."""
        return self._get("GET_DEBUGREGS", "struct kvmp_debugregs")

    def set_debugregs(self, debugregs: Any) -> None:
        kvm_ioctl(self.fd, "SET_DEBUGREGS", debugregs)

    def get_xsave(self) -> Any:
        """KVM_GET_XSAVE: a struct kvmp_xsave, the standard-format XSAVE image in `region`."""
        return self._get("GET_XSAVE", "struct kvmp_xsave")

    def set_xsave(self, xsave: Any) -> None:
        kvm_ioctl(self.fd, "SET_XSAVE", xsave)

    def get_xcrs(self) -> Any:
        """KVM_GET_XCRS: a struct kvmp_xcrs (nr_xcrs entries of xcrs[]: XCR0 only)."""
        return self._get("GET_XCRS", "struct kvmp_xcrs")

    def set_xcrs(self, xcrs: Any) -> None:
        kvm_ioctl(self.fd, "SET_XCRS", xcrs)

    def get_mp_state(self) -> int:
        return int(self._get("GET_MP_STATE", "struct kvmp_mp_state").mp_state)

    def set_mp_state(self, state: int) -> None:
        kvm_ioctl(self.fd, "SET_MP_STATE", ffi.new("struct kvmp_mp_state *", {"mp_state": state}))

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """KVM_GET_MSRS: the values the device could read (it stops at the first it can't)."""
        msrs = ffi.new("struct kvmp_msrs *", {"nmsrs": len(indices), "entries": len(indices)})
        for entry, index in zip(msrs.entries, indices, strict=True):
            entry.index = index
        n = kvm_ioctl(self.fd, "GET_MSRS", msrs)
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> int:
        """KVM_SET_MSRS: returns how many were set, in order (Linux stops at the first failure)."""
        msrs = ffi.new("struct kvmp_msrs *", {"nmsrs": len(values), "entries": len(values)})
        for entry, (index, data) in zip(msrs.entries, values.items(), strict=True):
            entry.index = index
            entry.data = data
        return kvm_ioctl(self.fd, "SET_MSRS", msrs)

    def setup_mce(self, mcg_cap: int) -> None:
        """KVM_X86_SETUP_MCE: give the guest MCG_CAP's banks (see Kvm.get_mce_cap_supported)."""
        kvm_ioctl(self.fd, "X86_SETUP_MCE", ffi.new("kvmp_u64 *", mcg_cap))

    def set_cpuid2(self, entries: list[CpuidEntry]) -> None:
        kvm_ioctl(self.fd, "SET_CPUID2", new_cpuid2(len(entries), entries))

    def get_cpuid2(self, nent: int) -> list[CpuidEntry]:
        """KVM_GET_CPUID2 into room for nent entries (E2BIG if the VCPU has more): the
        table as the guest's CPUID answers it now (Linux applies the guest's CR4, XCR0 and
        APIC base: OSXSAVE, APIC, 0xd.0 EBX). Linux 6.1 does not write nent back, so the
        count is the caller's: what it set."""
        buf = new_cpuid2(nent)
        kvm_ioctl(self.fd, "GET_CPUID2", buf)
        return cpuid_entries(buf)[:nent]

    # -- interrupts -------------------------------------------------------
    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: queue an external interrupt (only with no in-kernel irqchip)."""
        kvm_ioctl(self.fd, "INTERRUPT", ffi.new("struct kvmp_interrupt *", {"irq": vector}))

    def nmi(self) -> None:
        kvm_ioctl(self.fd, "NMI")

    @property
    def request_interrupt_window(self) -> bool:
        return bool(self.kvm_run.request_interrupt_window)

    @request_interrupt_window.setter
    def request_interrupt_window(self, value: bool) -> None:
        self.kvm_run.request_interrupt_window = int(value)

    @property
    def cr8(self) -> int:
        """run->cr8: the guest's task priority after an exit; what the next KVM_RUN gives
        it (a VMM with its own local APIC sets its TPR here, 0-15)."""
        return int(self.kvm_run.cr8)

    @cr8.setter
    def cr8(self, value: int) -> None:
        self.kvm_run.cr8 = value

    @property
    def ready_for_interrupt_injection(self) -> bool:
        return bool(self.kvm_run.ready_for_interrupt_injection)

    @property
    def if_flag(self) -> bool:
        return bool(self.kvm_run.if_flag)

    # -- running ----------------------------------------------------------
    def run(self) -> exits.Exit:
        """KVM_RUN until the next exit the VMM must see; a kick gives `Intr`."""
        self._run_thread = threading.get_ident()
        try:
            kvm_ioctl(self.fd, "RUN")
        except KvmError as e:
            if e.errno != 4:  # EINTR: a kick or another signal
                raise
            self.kvm_run.immediate_exit = 0
            return exits.Intr()
        finally:
            self._run_thread = None
        return self.decode_exit()

    def kick(self) -> None:
        """Make run() return Intr soon, from any thread; works before or during KVM_RUN."""
        self.kvm_run.immediate_exit = 1
        tid = self._run_thread
        if tid is not None:
            try:
                signal.pthread_kill(tid, KICK_SIGNAL)
            except ProcessLookupError:
                pass  # the thread left run() meanwhile; immediate_exit covers the next call

    def decode_exit(self) -> exits.Exit:
        """The exit the run area describes now (what run() returns; for callers that
        issue KVM_RUN themselves, e.g. from C)."""
        run = self.kvm_run
        reason = run.exit_reason
        if reason == EXIT["EXIT_IO"]:
            io = run.io
            data = ffi.buffer(self._base + io.data_offset, io.size * io.count)
            if io.direction == EXIT["EXIT_IO_OUT"]:
                return exits.IoOut(io.port, io.size, io.count, bytes(data))
            return exits.IoIn(io.port, io.size, io.count, memoryview(data))
        if reason == EXIT["EXIT_MMIO"]:
            m = run.mmio
            if m.is_write:
                return exits.MmioWrite(m.phys_addr, bytes(ffi.buffer(m.data, m.len)))
            return exits.MmioRead(m.phys_addr, memoryview(ffi.buffer(m.data, m.len)))
        if reason == EXIT["EXIT_HLT"]:
            return exits.Hlt()
        if reason == EXIT["EXIT_SHUTDOWN"]:
            return exits.Shutdown()
        if reason == EXIT["EXIT_IRQ_WINDOW_OPEN"]:
            return exits.IrqWindowOpen()
        if reason == EXIT["EXIT_INTR"]:
            return exits.Intr()
        if reason == EXIT["EXIT_SET_TPR"]:
            return exits.SetTpr()
        if reason == EXIT["EXIT_FAIL_ENTRY"]:
            f = run.fail_entry
            return exits.FailEntry(f.hardware_entry_failure_reason, f.cpu)
        if reason == EXIT["EXIT_INTERNAL_ERROR"]:
            i = run.internal
            n = min(i.ndata, 16)
            return exits.InternalError(i.suberror, tuple(i.data[0:n]))
        if reason == EXIT["EXIT_SYSTEM_EVENT"]:
            return exits.SystemEvent(run.system_event.type, run.system_event.data[0])
        return exits.Unknown(reason, run.hw.hardware_exit_reason)

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        if self.fd < 0:
            return
        if self._map is not None:
            ffi.release(self._cbuf)
            self._map.close()
        # KVMP_MMAP_VCPU's mapping: ours to unmap on Linux; on macOS the kext removes it
        # with the VCPU and an munmap would hit whatever is mapped there then (kvmport_ext.h)
        if self._ioctl_map is not None and sys.platform != "darwin":
            lib.munmap(*self._ioctl_map)
        close_fd(self.fd)
        self.fd = -1
