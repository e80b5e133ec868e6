"""The registry of port and MMIO ranges, and the dispatch an exit switch calls.

    bus = Bus()
    bus.register_ports(0x3F8, 8, uart)          # uart.io_read(port, size) / io_write(...)
    bus.io_in(0x3FD, 1) -> int; bus.io_out(0x3F8, 1, 0x41)

Unknown ports and MMIO answer all-ones on read and drop writes; each unknown port is
reported once (through `log`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class PortDevice(Protocol):
    def io_read(self, port: int, size: int) -> int: ...

    def io_write(self, port: int, size: int, value: int) -> None: ...


class PcDevice(PortDevice, Protocol):
    """A device that knows its own ports: `ports` is ((first port, count), ...)."""

    @property
    def ports(self) -> tuple[tuple[int, int], ...]: ...


class MmioDevice(Protocol):
    def mmio_read(self, address: int, size: int) -> int: ...

    def mmio_write(self, address: int, size: int, value: int) -> None: ...


def stderr_log(message: str) -> None:
    # "\r\n": the console may have the terminal in raw mode
    sys.stderr.write(f"pyhost: {message}\r\n")
    sys.stderr.flush()


@dataclass
class _MmioRange:
    start: int
    length: int
    device: MmioDevice


@dataclass
class Bus:
    """Port and MMIO ranges -> devices."""

    log: Callable[[str], None] = stderr_log
    ports: dict[int, PortDevice] = field(default_factory=dict)
    mmio: list[_MmioRange] = field(default_factory=list)
    unknown_reported: set[tuple[str, int]] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"io": 0, "mmio": 0})
    port_counts: dict[int, int] = field(default_factory=dict)  # exits per port

    def register_ports(self, start: int, length: int, device: PortDevice) -> None:
        for port in range(start, start + length):
            if port in self.ports:
                raise ValueError(f"port {port:#x} is already taken by {self.ports[port]!r}")
            self.ports[port] = device

    def register_device(self, device: PcDevice) -> None:
        """Each of the device's own port ranges."""
        for start, length in device.ports:
            self.register_ports(start, length, device)

    def register_mmio(self, start: int, length: int, device: MmioDevice) -> None:
        for r in self.mmio:
            if start < r.start + r.length and r.start < start + length:
                raise ValueError(f"MMIO range {start:#x}+{length:#x} overlaps {r.device!r}")
        self.mmio.append(_MmioRange(start, length, device))

    def _unknown(self, kind: str, where: int, what: str) -> None:
        if (kind, where) not in self.unknown_reported:
            self.unknown_reported.add((kind, where))
            self.log(f"no device at {kind} {where:#x}: {what} (reported once)")

    # -- port I/O -----------------------------------------------------------
    def io_in(self, port: int, size: int) -> int:
        dev = self.ports.get(port)
        if dev is None:
            self._unknown("port", port, f"{size}-byte read answers all-ones")
            return (1 << (8 * size)) - 1
        return dev.io_read(port, size) & ((1 << (8 * size)) - 1)

    def io_out(self, port: int, size: int, value: int) -> None:
        dev = self.ports.get(port)
        if dev is None:
            self._unknown("port", port, f"{size}-byte write of {value:#x} dropped")
            return
        dev.io_write(port, size, value)

    def io_in_data(self, port: int, size: int, data: memoryview) -> None:
        """An IN/INS exit: fill `data` (size * count bytes) from `port`."""
        self.counts["io"] += 1
        self.port_counts[port] = self.port_counts.get(port, 0) + 1
        for off in range(0, len(data), size):
            data[off:off + size] = self.io_in(port, size).to_bytes(size, "little")

    def io_out_data(self, port: int, size: int, data: bytes) -> None:
        """An OUT/OUTS exit: `data` is size * count bytes for `port`."""
        self.counts["io"] += 1
        self.port_counts[port] = self.port_counts.get(port, 0) + 1
        for off in range(0, len(data), size):
            self.io_out(port, size, int.from_bytes(data[off:off + size], "little"))

    # -- MMIO -----------------------------------------------------------------
    def _mmio_device(self, address: int) -> _MmioRange | None:
        for r in self.mmio:
            if r.start <= address < r.start + r.length:
                return r
        return None

    def mmio_read(self, address: int, data: memoryview) -> None:
        self.counts["mmio"] += 1
        r = self._mmio_device(address)
        if r is None:
            self._unknown("MMIO", address & ~0xFFF, f"{len(data)}-byte read answers all-ones")
            data[:] = b"\xff" * len(data)
            return
        value = r.device.mmio_read(address, len(data))
        data[:] = (value & ((1 << (8 * len(data))) - 1)).to_bytes(len(data), "little")

    def mmio_write(self, address: int, data: bytes) -> None:
        self.counts["mmio"] += 1
        r = self._mmio_device(address)
        if r is None:
            self._unknown("MMIO", address & ~0xFFF, f"{len(data)}-byte write dropped")
            return
        r.device.mmio_write(address, len(data), int.from_bytes(data, "little"))


POST_PORT, DELAY_PORT = 0x80, 0xED


class Ignored:
    """Ports that exist but do nothing (POST code 0x80, the 0xED delay port): reads give
    all-ones, writes are dropped, nothing is logged."""

    ports = ((POST_PORT, 1), (DELAY_PORT, 1))

    def io_read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        pass


class PciNoDevices:
    """PCI configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) with no device on
    the bus: the address register reads back, every configuration read is all-ones (which
    is how "no device" looks: vendor ID 0xffff)."""

    ADDRESS = 0xCF8
    DATA = 0xCFC
    ports = ((ADDRESS, 8),)

    def __init__(self) -> None:
        self.address = 0

    def io_read(self, port: int, size: int) -> int:
        if self.ADDRESS <= port < self.ADDRESS + 4:
            return self.address >> (8 * (port - self.ADDRESS))
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == self.ADDRESS and size == 4:
            self.address = value & 0x80FFFFFC
