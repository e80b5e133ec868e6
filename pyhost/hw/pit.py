"""The i8254 programmable interval timer (ports 0x40-0x43) and port 0x61 (system control
port B: channel 2's gate and output, the speaker enable).

Counters count from the host's monotonic clock at 1.193182 MHz, so a guest that
calibrates its TSC against the PIT measures real time. Channel 0 drives IRQ 0: in mode
2/3 (periodic), mode 0 (one-shot) and mode 4 (software strobe: Linux's one-shot clock
event, used with NO_HZ) the `PitTimer` thread raises it when the count runs out; ticks
the guest could not take in time coalesce (a PIC IRR bit holds one).
Channel 2's gate is bit 0 of port 0x61 and its output reads as bit 5 there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PIT_HZ = 1_193_182
NS = 1_000_000_000


def ticks_between(t0_ns: int, t1_ns: int) -> int:
    return (t1_ns - t0_ns) * PIT_HZ // NS


class Channel:
    """One counter."""

    def __init__(self, index: int, clock: Callable[[], int]) -> None:
        self.index = index
        self.clock = clock
        self.mode = 0
        self.rw = 3  # 1: LSB only, 2: MSB only, 3: LSB then MSB
        self.bcd = False
        self.count = 0x10000  # the reload value (0 written means 65536)
        self.load_time: int | None = None  # when counting from `count` started; None: idle
        self.gate = index != 2  # channels 0 and 1 are gated on; 2 by port 0x61
        self.stopped_at = 0  # ticks counted when the gate went low
        self.latched: list[int] = []  # bytes of a latched count/status, read first
        self.read_msb = False  # the next read (rw 3) gives the MSB
        self.write_msb = False  # the next write (rw 3) is the MSB
        self.write_lsb = 0
        self.null_count = True

    # -- time -------------------------------------------------------------------
    def elapsed(self, now: int | None = None) -> int:
        """Ticks counted since the count was loaded (frozen while the gate is low)."""
        if self.load_time is None:
            return 0
        if not self.gate:
            return self.stopped_at
        return ticks_between(self.load_time, self.clock() if now is None else now)

    def value(self, now: int | None = None) -> int:
        if self.load_time is None:
            return self.count & 0xFFFF
        d, n = self.elapsed(now), self.count
        if self.mode in (2, 6):
            return n - d % n
        if self.mode in (3, 7):
            return (n - (2 * d) % n) & 0xFFFF
        return (n - d) & 0xFFFF

    def output(self, now: int | None = None) -> bool:
        if self.load_time is None:
            return self.mode != 0  # mode 0 holds OUT low from the control word on
        d, n = self.elapsed(now), self.count
        if self.mode == 0:
            return d >= n
        if self.mode == 1:
            return d >= n
        if self.mode in (2, 6):
            return d % n != n - 1 or n == 1
        if self.mode in (3, 7):
            return d % n < (n + 1) // 2
        return d != n  # modes 4, 5: one tick low at terminal count

    def next_irq(self, after: int | None) -> int | None:
        """When OUT next rises (host ns) strictly after `after`, for IRQ 0; None if it
        does not (idle, gated off, or a one-shot that already fired)."""
        if self.load_time is None or not self.gate:
            return None
        after = self.load_time if after is None else max(after, self.load_time)
        period = self.count * NS  # in ns * PIT_HZ: exact integer arithmetic
        if self.mode in (2, 3, 6, 7):
            k = (after - self.load_time) * PIT_HZ // period + 1
            return self.load_time + -(-k * period // PIT_HZ)
        if self.mode in (0, 4):
            # mode 0: OUT rises at terminal count; mode 4: it drops for one clock
            # there and rises again, and the 8259 takes the rising edge
            ticks = period if self.mode == 0 else period + NS
            t = self.load_time + -(-ticks // PIT_HZ)
            return t if t > after else None
        return None

    # -- registers ---------------------------------------------------------------
    def control(self, value: int) -> None:
        rw = (value >> 4) & 3
        if rw == 0:  # counter latch command
            self.latch_count()
            return
        self.rw = rw
        self.mode = (value >> 1) & 7
        self.bcd = bool(value & 1)
        self.read_msb = self.write_msb = False
        self.latched = []
        self.load_time = None  # counting starts when the count is written
        self.null_count = True

    def latch_count(self) -> None:
        if self.latched:
            return  # a latched count is held until read
        v = self.value()
        self.latched = [v & 0xFF, v >> 8] if self.rw == 3 else \
            [v & 0xFF] if self.rw == 1 else [v >> 8]

    def latch_status(self) -> None:
        status = (self.output() << 7) | (self.null_count << 6) | (self.rw << 4) \
            | (self.mode << 1) | self.bcd
        self.latched.insert(0, status)

    def write(self, value: int) -> bool:
        """A byte to the counter port; True when a new count was loaded."""
        if self.rw == 1:
            count = value
        elif self.rw == 2:
            count = value << 8
        elif not self.write_msb:
            self.write_lsb = value
            self.write_msb = True
            if self.mode == 0:
                self.load_time = None  # mode 0 stops counting on the first byte
            return False
        else:
            self.write_msb = False
            count = self.write_lsb | value << 8
        self.count = count or 0x10000
        self.load_time = self.clock()
        self.stopped_at = 0
        self.null_count = False
        return True

    def read(self) -> int:
        if self.latched:
            return self.latched.pop(0)
        v = self.value()
        if self.rw == 1:
            return v & 0xFF
        if self.rw == 2:
            return v >> 8
        self.read_msb = not self.read_msb
        return v & 0xFF if self.read_msb else v >> 8

    def set_gate(self, gate: bool) -> None:
        if gate == self.gate:
            return
        if not gate:
            self.stopped_at = self.elapsed()
            self.gate = False
            return
        self.gate = True
        if self.load_time is None:
            return
        if self.mode in (1, 2, 3, 5, 6, 7):  # a rising gate restarts the count
            self.load_time = self.clock()
        else:  # modes 0 and 4 resume where they stopped
            self.load_time = self.clock() - self.stopped_at * NS // PIT_HZ


class Pit:
    """The three channels on ports 0x40-0x43, plus port 0x61 (`io_read`/`io_write` for
    both ranges). `on_program` is called when channel 0 gets a new count or mode."""

    BASE = 0x40
    PORT_B = 0x61
    ports = ((BASE, 4), (PORT_B, 1))

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns,
                 on_program: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.channels = [Channel(i, clock) for i in range(3)]
        self.on_program = on_program
        self.speaker = False
        self.port_b_low = 0  # bits 2-3 (parity/channel check enables) as written
        self.refresh = False

    def _programmed(self) -> None:
        if self.on_program is not None:
            self.on_program()

    def io_read(self, port: int, size: int) -> int:
        if port == self.PORT_B:
            self.refresh = not self.refresh  # bit 4 toggles, as the refresh clock does
            ch2 = self.channels[2]
            return (ch2.gate | self.speaker << 1 | self.port_b_low | self.refresh << 4
                    | ch2.output() << 5)
        if port == self.BASE + 3:
            return 0xFF  # the control word register cannot be read
        return self.channels[port - self.BASE].read()

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == self.PORT_B:
            self.channels[2].set_gate(bool(value & 1))
            self.speaker = bool(value & 2)
            self.port_b_low = value & 0x0C
            return
        if port == self.BASE + 3:
            sc = value >> 6
            if sc == 3:  # read-back: bit 5 clear latches counts, bit 4 clear latches status
                for i in range(3):
                    if value & (2 << i):
                        ch = self.channels[i]
                        if not value & 0x20:
                            ch.latch_count()
                        if not value & 0x10:
                            ch.latch_status()
                return
            self.channels[sc].control(value)
            if sc == 0 and (value >> 4) & 3:
                self._programmed()
            return
        ch = self.channels[port - self.BASE]
        if ch.write(value) and ch.index == 0:
            self._programmed()

    def next_irq0(self, after: int | None) -> int | None:
        return self.channels[0].next_irq(after)


class PitTimer(threading.Thread):
    """Raises IRQ 0 when channel 0's output rises: a host thread that sleeps until the
    next deadline. Takes `lock` (the machine's) for every look at the PIT; `fire` is
    called under it. `wake()` (with the lock held) re-reads the deadline after the guest
    reprogrammed channel 0."""

    def __init__(self, pit: Pit, lock: threading.RLock | threading.Lock,
                 fire: Callable[[], None]) -> None:
        super().__init__(name="pit", daemon=True)
        self.pit = pit
        self.cond = threading.Condition(lock)
        self.fire = fire
        self.stopping = False
        self.fired = 0
        self._last_fire: int | None = None

    def wake(self) -> None:
        self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def run(self) -> None:
        with self.cond:
            while not self.stopping:
                due = self.pit.next_irq0(self._last_fire)
                if due is None:
                    self.cond.wait()
                    continue
                now = self.pit.clock()
                if due > now:
                    self.cond.wait((due - now) / NS)
                    continue  # due now, or reprogrammed, or stopping: look again
                self.fired += 1
                self.fire()
                # ticks missed while the host was busy coalesce into this one
                self._last_fire = max(due, now)
