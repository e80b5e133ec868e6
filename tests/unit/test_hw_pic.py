"""i8259 pair: the init sequence Linux uses, vector delivery, EOI, masking, cascade."""

from __future__ import annotations

from pyhost.hw.pic import PicPair


def out(pic: PicPair, port: int, value: int) -> None:
    pic.io_write(port, 1, value)


def linux_init(pic: PicPair, master_base: int = 0x30, slave_base: int = 0x38,
               auto_eoi: bool = False) -> None:
    """What Linux's init_8259A() writes."""
    out(pic, 0x21, 0xFF)
    out(pic, 0xA1, 0xFF)
    out(pic, 0x20, 0x11)  # ICW1: edge, cascade, ICW4 needed
    out(pic, 0x21, master_base)  # ICW2
    out(pic, 0x21, 0x04)  # ICW3: slave on IRQ2
    out(pic, 0x21, 0x03 if auto_eoi else 0x01)  # ICW4: 8086 mode
    out(pic, 0xA0, 0x11)
    out(pic, 0xA1, slave_base)
    out(pic, 0xA1, 0x02)  # ICW3: slave id 2
    out(pic, 0xA1, 0x01)
    out(pic, 0x21, 0xFF)
    out(pic, 0xA1, 0xFF)


def test_imr_reads_back_as_linux_probes_it():
    pic = PicPair()
    out(pic, 0xA1, 0xFF)
    out(pic, 0x21, 0xA5)
    assert pic.io_read(0x21, 1) == 0xA5


def test_init_sequence_sets_the_guest_vectors():
    pic = PicPair()
    linux_init(pic)
    assert pic.master.vector_base == 0x30 and pic.slave.vector_base == 0x38
    assert pic.master.init_state == 0 and pic.slave.init_state == 0
    assert pic.io_read(0x21, 1) == 0xFF and pic.io_read(0xA1, 1) == 0xFF


def test_masked_irq_waits_until_unmasked_then_delivers_its_vector():
    pic = PicPair()
    linux_init(pic)
    pic.pulse(0)
    assert not pic.pending()
    out(pic, 0x21, 0xFE)  # unmask IRQ0
    assert pic.pending()
    assert pic.acknowledge() == 0x30
    assert not pic.pending()
    out(pic, 0x20, 0x0B)  # OCW3: read ISR
    assert pic.io_read(0x20, 1) == 0x01
    out(pic, 0x20, 0x60)  # specific EOI for IRQ0
    assert pic.io_read(0x20, 1) == 0x00


def test_in_service_blocks_lower_priority_until_eoi():
    pic = PicPair()
    linux_init(pic)
    out(pic, 0x21, 0x00)
    pic.pulse(0)
    assert pic.acknowledge() == 0x30
    pic.pulse(4)
    assert not pic.pending()  # IRQ4 < IRQ0 in priority, IRQ0 in service
    out(pic, 0x20, 0x0A)  # OCW3: read IRR
    assert pic.io_read(0x20, 1) == 0x10
    out(pic, 0x20, 0x20)  # non-specific EOI
    assert pic.pending() and pic.acknowledge() == 0x34


def test_higher_priority_preempts_and_priority_order():
    pic = PicPair()
    linux_init(pic, master_base=0x20)
    out(pic, 0x21, 0x00)
    pic.pulse(4)
    pic.pulse(3)
    pic.pulse(1)
    assert [pic.acknowledge() for _ in range(1)] == [0x21]
    # IRQ1 in service: 3 and 4 wait
    assert not pic.pending()
    out(pic, 0x20, 0x20)
    assert pic.acknowledge() == 0x23


def test_slave_irq_cascades_through_irq2():
    pic = PicPair()
    linux_init(pic)
    out(pic, 0x21, 0xFB)  # only the cascade unmasked on the master
    out(pic, 0xA1, 0xFE)  # IRQ8 unmasked on the slave
    pic.pulse(8)
    assert pic.pending()
    assert pic.acknowledge() == 0x38
    out(pic, 0x20, 0x0B)
    out(pic, 0xA0, 0x0B)
    assert pic.io_read(0x20, 1) == 0x04 and pic.io_read(0xA0, 1) == 0x01
    out(pic, 0xA0, 0x60)  # specific EOI on the slave
    out(pic, 0x20, 0x62)  # and for the cascade on the master
    assert pic.io_read(0x20, 1) == 0 and pic.io_read(0xA0, 1) == 0


def test_auto_eoi_leaves_isr_clear():
    pic = PicPair()
    linux_init(pic, auto_eoi=True)
    out(pic, 0x21, 0x00)
    pic.pulse(0)
    assert pic.acknowledge() == 0x30
    out(pic, 0x20, 0x0B)
    assert pic.io_read(0x20, 1) == 0
    pic.pulse(0)
    assert pic.pending()


def test_edge_input_latches_once_and_withdraws_on_low():
    pic = PicPair()
    linux_init(pic)
    out(pic, 0x21, 0x00)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x34
    out(pic, 0x20, 0x20)
    assert not pic.pending()  # still high, but no new edge
    pic.set_irq(4, False)
    pic.set_irq(4, True)
    assert pic.pending()
    pic.set_irq(4, False)  # withdrawn before the CPU took it
    assert not pic.pending()


def test_spurious_when_request_vanished_and_poll_command():
    pic = PicPair()
    linux_init(pic)
    assert pic.acknowledge() == 0x37  # nothing pending: spurious IRQ7
    out(pic, 0x21, 0x00)
    pic.pulse(5)
    out(pic, 0x20, 0x0C)  # OCW3 poll
    assert pic.io_read(0x20, 1) == 0x85
    assert not pic.pending()


def test_on_change_is_called_for_new_requests():
    calls = []
    pic = PicPair(on_change=lambda: calls.append(1))
    pic.pulse(0)
    assert calls
