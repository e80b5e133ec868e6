"""8250/16550A UART: register semantics, THR-empty and RX interrupts, loopback, DLAB."""

from __future__ import annotations

from pyhost.hw.uart import Uart8250

B = 0x3F8


def make() -> tuple[Uart8250, list[bytes], list[bool]]:
    out: list[bytes] = []
    irq: list[bool] = []
    return Uart8250(out.append, irq.append), out, irq


def test_thr_write_goes_out_and_lsr_shows_empty():
    u, out, _ = make()
    u.io_write(B, 1, ord("h"))
    u.io_write(B, 1, ord("i"))
    assert b"".join(out) == b"hi"
    assert u.io_read(B + 5, 1) == 0x60  # THRE | TEMT, no data


def test_dlab_switches_to_divisor_latch():
    u, out, _ = make()
    u.io_write(B + 3, 1, 0x80)
    u.io_write(B, 1, 0x01)
    u.io_write(B + 1, 1, 0x00)
    assert u.io_read(B, 1) == 1 and u.io_read(B + 1, 1) == 0
    u.io_write(B + 3, 1, 0x03)  # 8N1
    assert u.dll == 1 and out == [] and u.io_read(B + 3, 1) == 0x03


def test_ier_keeps_four_bits_and_scratch_reads_back():
    u, _, _ = make()
    u.io_write(B + 1, 1, 0xFF)
    assert u.io_read(B + 1, 1) == 0x0F
    u.io_write(B + 7, 1, 0x5A)
    assert u.io_read(B + 7, 1) == 0x5A


def test_fifo_enable_shows_in_iir():
    u, _, _ = make()
    assert u.io_read(B + 2, 1) == 0x01
    u.io_write(B + 2, 1, 0x07)
    assert u.io_read(B + 2, 1) == 0xC1


def test_thr_empty_interrupt_needs_out2_and_clears_on_iir_read():
    u, _, irq = make()
    u.io_write(B + 1, 1, 0x02)  # ETBEI
    assert irq == []  # OUT2 off: the line does not reach the PIC
    u.io_write(B + 4, 1, 0x08)  # OUT2
    assert irq == [True]
    assert u.io_read(B + 2, 1) == 0x02  # THR empty, and reading IIR clears it
    assert irq == [True, False]
    assert u.io_read(B + 2, 1) == 0x01
    u.io_write(B, 1, ord("x"))  # THR written and empty again: interrupt again
    assert irq[-1] is True
    u.io_write(B + 1, 1, 0x00)
    assert irq[-1] is False


def test_rx_data_interrupt_and_read():
    u, _, irq = make()
    u.io_write(B + 4, 1, 0x08)
    u.io_write(B + 1, 1, 0x01)  # ERBFI
    u.receive(b"ok")
    assert irq == [True]
    assert u.io_read(B + 5, 1) & 0x01
    assert u.io_read(B + 2, 1) == 0x04
    assert u.io_read(B, 1) == ord("o")
    assert u.io_read(B, 1) == ord("k")
    assert irq == [True, False]
    assert u.io_read(B + 5, 1) == 0x60


def test_rx_has_priority_over_thr_empty():
    u, _, _ = make()
    u.io_write(B + 4, 1, 0x08)
    u.io_write(B + 1, 1, 0x03)
    u.receive(b"a")
    assert u.io_read(B + 2, 1) == 0x04
    u.io_read(B, 1)
    assert u.io_read(B + 2, 1) == 0x02


def test_fcr_clears_the_receive_fifo():
    u, _, _ = make()
    u.receive(b"stale")
    u.io_write(B + 2, 1, 0x03)
    assert not u.io_read(B + 5, 1) & 0x01


def test_loopback_as_linux_probes_it():
    u, out, _ = make()
    u.io_write(B + 4, 1, 0x10 | 0x0A)  # LOOP | OUT2 | RTS
    assert u.io_read(B + 6, 1) & 0xF0 == 0x90  # DCD | CTS
    u.io_write(B, 1, 0x42)
    assert out == [] and u.io_read(B, 1) == 0x42
    u.io_write(B + 4, 1, 0x00)
    assert u.io_read(B + 6, 1) & 0xF0 == 0xB0  # out of loopback: DCD DSR CTS
