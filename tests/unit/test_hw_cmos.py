"""CMOS/RTC (0x70/0x71) and the i8042's reset, plus the port bus."""

from __future__ import annotations

import calendar

from pyhost.hw.bus import Bus, Ignored, PciNoDevices
from pyhost.hw.i8042 import I8042
from pyhost.hw.rtc import Cmos

T = calendar.timegm((2026, 11, 23, 21, 34, 56, 0, 0, 0))  # a Monday


def rd(c: Cmos, reg: int) -> int:
    c.io_write(0x70, 1, reg)
    return c.io_read(0x71, 1)


def test_cmos_time_in_bcd_24h_and_status():
    c = Cmos(clock=lambda: T)
    assert [rd(c, r) for r in (0, 2, 4, 6, 7, 8, 9, 0x32)] == \
        [0x56, 0x34, 0x21, 0x02, 0x23, 0x11, 0x26, 0x20]
    assert rd(c, 0x0A) & 0x80 == 0  # no update in progress
    assert rd(c, 0x0B) == 0x02 and rd(c, 0x0D) == 0x80


def test_cmos_binary_12h_modes():
    c = Cmos(clock=lambda: T)
    c.io_write(0x70, 1, 0x8B)  # NMI off + register B
    c.io_write(0x71, 1, 0x04)  # binary, 12-hour
    assert c.nmi_disabled
    assert rd(c, 0) == 56 and rd(c, 4) == 0x80 | 9


def test_cmos_memory_and_setting_the_clock():
    c = Cmos(clock=lambda: T)
    c.io_write(0x70, 1, 0x40)
    c.io_write(0x71, 1, 0xAB)
    assert rd(c, 0x40) == 0xAB
    c.io_write(0x70, 1, 0x04)
    c.io_write(0x71, 1, 0x22)  # an hour later
    assert c.offset == 3600 and rd(c, 4) == 0x22


def test_i8042_reset_command_and_self_test():
    resets: list[int] = []
    k = I8042(on_reset=lambda: resets.append(1))
    assert k.io_read(0x64, 1) & 0x03 == 0  # nothing to read, ready for input
    k.io_write(0x64, 1, 0xAA)
    assert k.io_read(0x64, 1) & 0x01 and k.io_read(0x60, 1) == 0x55
    k.io_write(0x64, 1, 0x20)
    assert k.io_read(0x60, 1) == k.ccb
    assert resets == []
    k.io_write(0x64, 1, 0xFE)
    assert resets == [1]


def test_bus_dispatch_unknown_ports_and_pci():
    logged: list[str] = []
    bus = Bus(log=logged.append)
    bus.register_ports(0x80, 1, Ignored())
    bus.register_ports(0xCF8, 8, PciNoDevices())
    assert bus.io_in(0x1234, 2) == 0xFFFF
    assert bus.io_in(0x1234, 1) == 0xFF
    bus.io_out(0x1234, 1, 0)
    assert len(logged) == 1  # once per port
    bus.io_out(0x80, 1, 0x12)
    assert len(logged) == 1
    bus.io_out(0xCF8, 4, 0x80000000)
    assert bus.io_in(0xCF8, 4) == 0x80000000
    assert bus.io_in(0xCFC, 4) == 0xFFFFFFFF  # no device
    data = memoryview(bytearray(4))
    bus.mmio_read(0xFEE00000, data)
    assert bytes(data) == b"\xff" * 4
