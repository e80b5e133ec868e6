"""VCPU exits as a typed union: what `Vcpu.run()` returns.

Data slices of IoIn and MmioRead are writable views into the run area: fill
them before the next `run()` and the guest's IN or MMIO load sees the value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IoOut:
    """The guest wrote `data` (size * count bytes) to `port` (OUT/OUTS)."""

    port: int
    size: int
    count: int
    data: bytes


@dataclass(frozen=True)
class IoIn:
    """The guest reads `size * count` bytes from `port`: write them into `data`."""

    port: int
    size: int
    count: int
    data: memoryview


@dataclass(frozen=True)
class MmioWrite:
    """The guest stored `data` at an address no memory slot backs."""

    address: int
    data: bytes


@dataclass(frozen=True)
class MmioRead:
    """The guest loads `len(data)` bytes at an unbacked address: write them into `data`."""

    address: int
    data: memoryview


@dataclass(frozen=True)
class Hlt:
    """HLT: with no in-kernel interrupt controller the VMM decides what wakes the guest."""


@dataclass(frozen=True)
class Shutdown:
    """Triple fault (or another shutdown condition): the guest cannot continue."""


@dataclass(frozen=True)
class FailEntry:
    """The hardware refused VM entry."""

    hardware_entry_failure_reason: int
    cpu: int


@dataclass(frozen=True)
class InternalError:
    """The driver could not handle an exit (suberror per KVM_INTERNAL_ERROR_*)."""

    suberror: int
    data: tuple[int, ...]


@dataclass(frozen=True)
class IrqWindowOpen:
    """The guest can take an interrupt now (after request_interrupt_window)."""


@dataclass(frozen=True)
class SetTpr:
    """The guest lowered its task priority (MOV to CR8): `Vcpu.cr8` has the new one, which
    may let an interrupt the VMM's local APIC holds through."""


@dataclass(frozen=True)
class Intr:
    """KVM_RUN was interrupted by a signal or immediate_exit (a kick)."""


@dataclass(frozen=True)
class SystemEvent:
    """A system event such as reset or shutdown (KVM_SYSTEM_EVENT_*)."""

    type: int
    flags: int


@dataclass(frozen=True)
class Unknown:
    """Any other exit reason, with the hardware reason when the driver gives one."""

    exit_reason: int
    hardware_exit_reason: int


Exit = (
    IoOut | IoIn | MmioWrite | MmioRead | Hlt | Shutdown | FailEntry | InternalError
    | IrqWindowOpen | SetTpr | Intr | SystemEvent | Unknown
)
