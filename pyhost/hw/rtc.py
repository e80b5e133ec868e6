"""CMOS RAM and the MC146818 real-time clock (index port 0x70, data port 0x71).

The clock registers show the host's UTC time (plus whatever offset the guest set by
writing them), in BCD or binary and 12/24-hour form as status register B asks. Status
A reads with UIP clear and the standard 32.768 kHz divider; C has no flags pending;
D has VRT (battery good). The other 114 bytes are plain CMOS memory.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable

INDEX_PORT, DATA_PORT = 0x70, 0x71
SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
SEC_ALARM, MIN_ALARM, HOUR_ALARM = 0x01, 0x03, 0x05
STATUS_A, STATUS_B, STATUS_C, STATUS_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
B_24H, B_BINARY, B_SET = 0x02, 0x04, 0x80
A_DEFAULT = 0x26  # 32.768 kHz time base, 1024 Hz periodic rate
D_VRT = 0x80
TIME_REGS = (SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY)


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _from_bcd(v: int) -> int:
    return (v >> 4) * 10 + (v & 0xF)


class Cmos:
    ports = ((INDEX_PORT, 2),)  # with DATA_PORT

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.offset = 0.0  # guest time minus host time, after the guest set the clock
        self.index = 0
        self.nmi_disabled = False
        self.ram = bytearray(128)
        self.ram[STATUS_A] = A_DEFAULT
        self.ram[STATUS_B] = B_24H  # BCD, 24-hour: what a PC BIOS leaves
        self.ram[STATUS_D] = D_VRT

    def _encode(self, v: int) -> int:
        return v if self.ram[STATUS_B] & B_BINARY else _bcd(v)

    def _decode(self, v: int) -> int:
        return v if self.ram[STATUS_B] & B_BINARY else _from_bcd(v)

    def _now(self) -> time.struct_time:
        return time.gmtime(self.clock() + self.offset)

    def read_register(self, reg: int) -> int:
        if reg in TIME_REGS:
            t = self._now()
            if reg == SECONDS:
                return self._encode(t.tm_sec)
            if reg == MINUTES:
                return self._encode(t.tm_min)
            if reg == HOURS:
                if self.ram[STATUS_B] & B_24H:
                    return self._encode(t.tm_hour)
                h = t.tm_hour % 12 or 12
                return self._encode(h) | (0x80 if t.tm_hour >= 12 else 0)
            if reg == WEEKDAY:
                return self._encode((t.tm_wday + 1) % 7 + 1)  # 1 = Sunday
            if reg == DAY:
                return self._encode(t.tm_mday)
            if reg == MONTH:
                return self._encode(t.tm_mon)
            if reg == YEAR:
                return self._encode(t.tm_year % 100)
            return self._encode(t.tm_year // 100)
        if reg == STATUS_A:
            return self.ram[STATUS_A] & 0x7F  # UIP clear: the time can be read now
        if reg == STATUS_C:
            value = self.ram[STATUS_C]
            self.ram[STATUS_C] = 0  # reading C acknowledges its flags
            return value
        return self.ram[reg]

    def write_register(self, reg: int, value: int) -> None:
        if reg in TIME_REGS:
            # the guest sets the clock: keep the other fields, move the offset
            t = self._now()
            fields = {SECONDS: t.tm_sec, MINUTES: t.tm_min, HOURS: t.tm_hour, DAY: t.tm_mday,
                      MONTH: t.tm_mon, YEAR: t.tm_year % 100, CENTURY: t.tm_year // 100}
            if reg == WEEKDAY:
                return
            v = self._decode(value & 0x7F if reg == HOURS else value)
            if reg == HOURS and not self.ram[STATUS_B] & B_24H:
                v = v % 12 + (12 if value & 0x80 else 0)
            fields[reg] = v
            try:
                new = calendar.timegm((fields[CENTURY] * 100 + fields[YEAR], fields[MONTH],
                                       fields[DAY], fields[HOURS], fields[MINUTES],
                                       fields[SECONDS], 0, 0, 0))
            except (ValueError, OverflowError):
                return
            self.offset += new - calendar.timegm(t)
            return
        if reg in (STATUS_C, STATUS_D):
            return  # read-only
        self.ram[reg] = value

    def io_read(self, port: int, size: int) -> int:
        if port == INDEX_PORT:
            return 0xFF  # write-only on a PC
        return self.read_register(self.index)

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == INDEX_PORT:
            self.nmi_disabled = bool(value & 0x80)
            self.index = value & 0x7F
        else:
            self.write_register(self.index, value & 0xFF)
