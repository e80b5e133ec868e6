"""i8254 PIT with a fake clock: counting, latch, read-back, modes 0/2/3/4, channel 2 gate
and output through port 0x61, and the IRQ0 deadlines the timer thread follows."""

from __future__ import annotations

import threading
import time

from pyhost.hw.pit import NS, PIT_HZ, Pit, PitTimer


class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_ticks(self, ticks: int) -> None:
        self.ns += -(-ticks * NS // PIT_HZ)  # round up so `ticks` have fully elapsed


def read16(pit: Pit, port: int) -> int:
    lo = pit.io_read(port, 1)
    return lo | pit.io_read(port, 1) << 8


def test_mode2_counts_down_and_reloads_with_latch():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x43, 1, 0x34)  # channel 0, LSB/MSB, mode 2
    pit.io_write(0x40, 1, 1000 & 0xFF)
    pit.io_write(0x40, 1, 1000 >> 8)
    clock.advance_ticks(100)
    pit.io_write(0x43, 1, 0x00)  # latch channel 0
    clock.advance_ticks(50)  # a latched value does not move
    assert read16(pit, 0x40) == 900
    clock.advance_ticks(1000)
    pit.io_write(0x43, 1, 0x00)
    assert read16(pit, 0x40) == 850  # reloaded: 1150 ticks in -> 1000 - 150


def test_latch_is_held_until_read_and_readback_status():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x43, 1, 0x30)  # channel 0, mode 0
    pit.io_write(0x40, 1, 0x00)
    pit.io_write(0x40, 1, 0x10)  # 4096
    clock.advance_ticks(96)
    pit.io_write(0x43, 1, 0xE2)  # read-back: latch count and status of channel 0
    status = pit.io_read(0x40, 1)
    assert status & 0x3F == 0x30  # rw=3, mode 0, binary
    assert not status & 0x80  # OUT low: still counting
    assert read16(pit, 0x40) == 4000


def test_mode0_one_shot_output_and_deadline():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x43, 1, 0x30)
    pit.io_write(0x40, 1, 100)
    t0 = clock.ns
    pit.io_write(0x40, 1, 0)
    due = pit.next_irq0(None)
    assert due is not None and abs(due - (t0 + 100 * NS // PIT_HZ)) <= 1
    assert pit.next_irq0(due) is None  # one shot
    clock.advance_ticks(101)
    assert pit.channels[0].output()


def test_mode4_strobe_is_a_one_shot_irq0():
    """Linux's i8253 clock event in one-shot mode writes 0x38 (mode 4), then LSB, MSB."""
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x43, 1, 0x38)
    assert pit.next_irq0(None) is None  # no count yet
    pit.io_write(0x40, 1, 100)
    t0 = clock.ns
    pit.io_write(0x40, 1, 0)
    due = pit.next_irq0(None)
    # OUT drops for one clock at terminal count; the IRQ is its rising edge, one tick later
    assert due is not None and abs(due - (t0 + 101 * NS // PIT_HZ)) <= 1
    assert pit.next_irq0(due) is None  # one shot until the next count
    clock.advance_ticks(100)
    assert not pit.channels[0].output()
    clock.advance_ticks(1)
    assert pit.channels[0].output()
    pit.io_write(0x40, 1, 50)  # a new count re-arms it
    pit.io_write(0x40, 1, 0)
    assert pit.next_irq0(due) is not None


def test_mode3_periodic_deadlines():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x43, 1, 0x36)  # channel 0, mode 3
    count = 11932  # 100 Hz
    pit.io_write(0x40, 1, count & 0xFF)
    pit.io_write(0x40, 1, count >> 8)
    first = pit.next_irq0(None)
    second = pit.next_irq0(first)
    assert first is not None and second is not None
    assert abs((second - first) - count * NS / PIT_HZ) < 2
    assert abs((first - clock.ns) - 10_000_000) < 10_000


def test_channel2_gate_and_output_via_port_61():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x61, 1, pit.io_read(0x61, 1) & ~0x02 | 0x01)  # gate high, speaker off
    pit.io_write(0x43, 1, 0xB0)  # channel 2, LSB/MSB, mode 0
    pit.io_write(0x42, 1, 0xE8)
    pit.io_write(0x42, 1, 0x03)  # 1000
    assert not pit.io_read(0x61, 1) & 0x20
    clock.advance_ticks(500)
    pit.io_write(0x61, 1, 0x00)  # gate low: counting stops
    clock.advance_ticks(5000)
    assert not pit.io_read(0x61, 1) & 0x20
    pit.io_write(0x43, 1, 0x80)  # latch channel 2
    assert read16(pit, 0x42) == 500
    pit.io_write(0x61, 1, 0x01)  # gate high again: mode 0 resumes
    clock.advance_ticks(501)
    assert pit.io_read(0x61, 1) & 0x21 == 0x21


def test_unlatched_reads_follow_the_counter():
    clock = FakeClock()
    pit = Pit(clock)
    pit.io_write(0x61, 1, 0x01)
    pit.io_write(0x43, 1, 0xB0)
    pit.io_write(0x42, 1, 0xFF)
    pit.io_write(0x42, 1, 0xFF)
    clock.advance_ticks(0x100)
    assert pit.io_read(0x42, 1) == 0xFF  # LSB of 0xFEFF
    assert pit.io_read(0x42, 1) == 0xFE  # MSB


def test_timer_thread_raises_irq0_periodically():
    lock = threading.RLock()
    fired: list[float] = []
    pit = Pit()
    timer = PitTimer(pit, lock, lambda: fired.append(time.monotonic()))
    pit.on_program = timer.wake
    timer.start()
    try:
        with lock:
            pit.io_write(0x43, 1, 0x34)
            count = PIT_HZ // 200  # 200 Hz
            pit.io_write(0x40, 1, count & 0xFF)
            pit.io_write(0x40, 1, count >> 8)
        time.sleep(0.2)
        with lock:
            pit.io_write(0x43, 1, 0x30)  # mode 0, no count yet: stops the ticks
        n = len(fired)
        time.sleep(0.05)
    finally:
        timer.stop()
        timer.join(1)
    assert 5 <= n <= 45  # 40 due; a loaded host may run the thread late, never early
    assert len(fired) == n
