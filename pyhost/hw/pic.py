"""The i8259A programmable interrupt controller pair of a PC (master 0x20/0x21 with
IRQ 0-7, slave 0xA0/0xA1 with IRQ 8-15 cascaded into the master's IRQ 2).

What it models: the ICW1-ICW4 initialisation sequence (vector base from the guest's own
ICW2, single/cascade mode, level/edge, auto-EOI), OCW1 (IMR), OCW2 (non-specific and
specific EOI, rotation, set priority), OCW3 (read IRR/ISR, poll, special mask mode), and
INTA (`acknowledge`: the vector to inject, with IRR/ISR updated).

Edge-triggered inputs (what a PC uses) latch IRR on a rising edge. `set_irq(n, False)`
also withdraws a request that was not yet acknowledged (a device whose interrupt
condition went away, e.g. the UART's THR-empty after a THR write), so the guest does not
see interrupts for conditions already gone; `pulse(n)` is a rising and falling edge (the
PIT's output) whose request stays latched until acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable

SPURIOUS_IRQ = 7


def _lowest_bit_priority(mask: int, priority_add: int) -> int:
    """The priority (0 highest) of the best-priority bit in mask, or 8 if none."""
    if not mask:
        return 8
    for p in range(8):
        if mask & (1 << ((p + priority_add) & 7)):
            return p
    return 8  # pragma: no cover


class I8259:
    """One 8259A chip."""

    def __init__(self, name: str, base_port: int) -> None:
        self.name = name
        self.base_port = base_port
        self._reset()
        self.imr = 0xFF  # masked until programmed
        self.levels = 0  # the input lines as last driven
        self.vector_base = 0x08 if base_port == 0x20 else 0x70  # the BIOS's, until ICW2
        self.level_triggered = False
        self.single = False
        self.icw3 = 0
        self.init_state = 0  # 0: operational; 2, 3, 4: expecting ICW2, ICW3, ICW4
        self.icw4_needed = False
        self.cascade: I8259 | None = None  # master only: the slave on input 2

    def _reset(self) -> None:
        """What ICW1 clears: requests, in-service, mask, priority and the OCW3/auto-EOI
        modes (a new chip starts the same, but masked)."""
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self.priority_add = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False

    # -- lines --------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        bit = 1 << irq
        if level:
            if self.level_triggered or not self.levels & bit:
                self.irr |= bit
            self.levels |= bit
        else:
            self.levels &= ~bit
            self.irr &= ~bit

    def pulse(self, irq: int) -> None:
        self.irr |= 1 << irq
        if self.level_triggered:  # a pulse on a level input is gone by the time it's read
            self.irr &= ~(1 << irq) | self.levels

    def _irr(self) -> int:
        irr = self.irr
        if self.cascade is not None and not self.single and self.icw3 & 0x04:
            irr = (irr | 0x04) if self.cascade.output() else (irr & ~0x04)
        return irr

    def _best_request(self) -> int | None:
        """The IRQ this chip would signal now, if any."""
        pending = self._irr() & ~self.imr
        p = _lowest_bit_priority(pending, self.priority_add)
        if p == 8:
            return None
        in_service = self.isr & ~self.imr if self.special_mask else self.isr
        # a slave's request on the master's cascade input may nest (special fully nested
        # mode is not modelled, but a higher-priority slave IRQ still waits for EOI)
        if p < _lowest_bit_priority(in_service, self.priority_add):
            return (p + self.priority_add) & 7
        return None

    def output(self) -> bool:
        """The INT output: a request of higher priority than anything in service."""
        return self._best_request() is not None

    def _ack(self, irq: int) -> None:
        bit = 1 << irq
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= bit
        if not self.level_triggered:
            self.irr &= ~bit

    def acknowledge(self) -> int:
        """INTA: the vector of the best request (spurious IRQ 7 if it vanished)."""
        irq = self._best_request()
        if irq is None:
            return self.vector_base | SPURIOUS_IRQ
        if irq == 2 and self.cascade is not None and not self.single and self.icw3 & 0x04:
            self._ack(2)
            return self.cascade.acknowledge()
        self._ack(irq)
        return self.vector_base | irq

    # -- registers ------------------------------------------------------------
    def write_command(self, value: int) -> None:
        if value & 0x10:  # ICW1
            self._reset()
            self.init_state = 2
            self.icw4_needed = bool(value & 0x01)
            self.single = bool(value & 0x02)
            self.level_triggered = bool(value & 0x08)
            return
        if value & 0x08:  # OCW3
            if value & 0x04:
                self.poll = True
            if value & 0x02:
                self.read_isr = bool(value & 0x01)
            if value & 0x40:
                self.special_mask = bool(value & 0x20)
            return
        # OCW2
        cmd = value >> 5
        if cmd in (0, 4):  # clear / set rotate in automatic EOI mode
            self.rotate_on_auto_eoi = cmd == 4
        elif cmd in (1, 5):  # non-specific EOI (5: and rotate)
            in_service = self.isr & ~self.imr if self.special_mask else self.isr
            p = _lowest_bit_priority(in_service, self.priority_add)
            if p != 8:
                irq = (p + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
        elif cmd in (3, 7):  # specific EOI (7: and rotate)
            irq = value & 7
            self.isr &= ~(1 << irq)
            if cmd == 7:
                self.priority_add = (irq + 1) & 7
        elif cmd == 6:  # set priority: IRQ value&7 becomes the lowest
            self.priority_add = (value + 1) & 7
        # cmd 2: no operation

    def write_data(self, value: int) -> None:
        if self.init_state == 2:  # ICW2
            self.vector_base = value & 0xF8
            self.init_state = 4 if self.single else 3
            if self.single and not self.icw4_needed:
                self.init_state = 0
        elif self.init_state == 3:  # ICW3
            self.icw3 = value
            self.init_state = 4 if self.icw4_needed else 0
        elif self.init_state == 4:  # ICW4
            self.auto_eoi = bool(value & 0x02)
            self.init_state = 0
        else:  # OCW1
            self.imr = value

    def read_command(self) -> int:
        if self.poll:
            self.poll = False
            irq = self._best_request()
            if irq is None:
                return 0
            self.acknowledge()
            return 0x80 | irq
        return self.isr if self.read_isr else self._irr()

    def read_data(self) -> int:
        return self.imr


class PicPair:
    """Master and slave as one device on ports 0x20-0x21 and 0xA0-0xA1.

    `on_change` is called after anything that may have raised the INT output (a new
    request, an EOI, an unmask): the machine uses it to wake or kick the VCPU.
    """

    MASTER_PORT = 0x20
    SLAVE_PORT = 0xA0
    ports = ((MASTER_PORT, 2), (SLAVE_PORT, 2))

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.master = I8259("master", self.MASTER_PORT)
        self.slave = I8259("slave", self.SLAVE_PORT)
        self.master.cascade = self.slave
        self.master.icw3 = 0x04  # the PC wiring, also before the guest programs it
        self.slave.icw3 = 0x02
        self.on_change = on_change

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def set_irq(self, irq: int, level: bool) -> None:
        chip = self.master if irq < 8 else self.slave
        chip.set_irq(irq & 7, level)
        if level:
            self._changed()

    def pulse(self, irq: int) -> None:
        chip = self.master if irq < 8 else self.slave
        chip.pulse(irq & 7)
        self._changed()

    def pending(self) -> bool:
        """The master's INT output: an interrupt waits for the CPU."""
        if not (self.master.irr or self.slave.irr):
            return False  # the common case, checked on every exit: keep it cheap
        return self.master.output()

    def acknowledge(self) -> int:
        """INTA cycle: the vector the CPU takes."""
        return self.master.acknowledge()

    def describe(self) -> str:
        """Each chip's IRR, ISR and IMR: a stuck ISR bit explains a guest that never ticks."""
        return " ".join(f"pic-{c.name} irr={c.irr:#04x} isr={c.isr:#04x} imr={c.imr:#04x}"
                        for c in (self.master, self.slave))

    def io_read(self, port: int, size: int) -> int:
        chip = self.master if port < 0xA0 else self.slave
        return chip.read_data() if port & 1 else chip.read_command()

    def io_write(self, port: int, size: int, value: int) -> None:
        chip = self.master if port < 0xA0 else self.slave
        value &= 0xFF
        if port & 1:
            chip.write_data(value)
        else:
            chip.write_command(value)
        self._changed()
