"""An 8250/16550A UART (COM1: ports 0x3F8-0x3FF, IRQ 4).

Registers: RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR, and DLL/DLM behind LCR.DLAB.
Transmission is instant: a THR write goes to `output` at once and THR is empty again,
so LSR always shows THRE|TEMT and a THR-empty interrupt follows each write while
IER.ETBEI is set. Received bytes (`receive`, from the console thread) wait in a FIFO
(DR in LSR, a received-data interrupt with IER.ERBFI). The interrupt output reaches the
PIC only while MCR.OUT2 is set, as on a PC. Loopback (MCR.LOOP) routes THR to RBR and
the modem control outputs to the modem status inputs, as Linux's probe expects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

COM1_BASE, COM1_IRQ = 0x3F8, 4

# register offsets
RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 1, 2, 4, 8
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI = 0x01, 0x00, 0x02, 0x04, 0x06
IIR_FIFO_ENABLED = 0xC0
FCR_ENABLE, FCR_CLEAR_RX, FCR_CLEAR_TX = 1, 2, 4
LCR_DLAB = 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 1, 2, 4, 8, 0x10
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 1, 2, 4, 8
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
RX_FIFO_SIZE = 4096  # how much typed-ahead input is kept (a 16550 holds 16; we are kinder)


class Uart8250:
    def __init__(self, output: Callable[[bytes], None],
                 set_irq: Callable[[bool], None] | None = None, base: int = COM1_BASE) -> None:
        self.output = output
        self.set_irq = set_irq
        self.base = base
        self.ports = ((base, 8),)  # THR/RBR/DLL, IER/DLM, IIR/FCR, LCR, MCR, LSR, MSR, SCR
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.dll = 0x0C  # 9600 baud until the guest says otherwise
        self.dlm = 0
        self.fcr = 0
        self.lsr_errors = 0
        self.msr_delta = 0
        self.rx: deque[int] = deque()
        self.thr_empty_pending = False  # the THR-empty interrupt condition
        self.irq_line = False
        self.transmitted = 0

    # -- the host side --------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes from the console: they wait in the receive FIFO."""
        for b in data:
            if len(self.rx) >= RX_FIFO_SIZE:
                self.lsr_errors |= LSR_OE
                break
            self.rx.append(b)
        self._update_irq()

    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_ENABLE)

    # -- interrupts ---------------------------------------------------------------
    def _interrupt_id(self) -> int:
        if self.ier & IER_RLSI and self.lsr_errors:
            return IIR_RLSI
        if self.ier & IER_RDI and self.rx:
            return IIR_RDI
        if self.ier & IER_THRI and self.thr_empty_pending:
            return IIR_THRI
        if self.ier & IER_MSI and self.msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        line = self._interrupt_id() != IIR_NO_INT and bool(self.mcr & MCR_OUT2)
        if line != self.irq_line:
            self.irq_line = line
            if self.set_irq is not None:
                self.set_irq(line)

    # -- registers ------------------------------------------------------------------
    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:
            m = self.mcr
            status = ((m & MCR_RTS) and MSR_CTS) | ((m & MCR_DTR) and MSR_DSR) \
                | ((m & MCR_OUT1) and MSR_RI) | ((m & MCR_OUT2) and MSR_DCD)
        else:
            status = MSR_DCD | MSR_DSR | MSR_CTS  # a terminal is attached
        return status | self.msr_delta

    def io_read(self, port: int, size: int) -> int:
        reg = (port - self.base) & 7
        value = 0xFF
        if reg == RBR_THR:
            if self.lcr & LCR_DLAB:
                value = self.dll
            else:
                value = self.rx.popleft() if self.rx else 0
        elif reg == IER:
            value = self.dlm if self.lcr & LCR_DLAB else self.ier
        elif reg == IIR_FCR:
            iid = self._interrupt_id()
            if iid == IIR_THRI:
                self.thr_empty_pending = False  # reading IIR reports it and clears it
            value = iid | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        elif reg == LCR:
            value = self.lcr
        elif reg == MCR:
            value = self.mcr
        elif reg == LSR:
            value = LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0) | self.lsr_errors
            self.lsr_errors = 0
        elif reg == MSR:
            value = self._msr()
            self.msr_delta = 0
        elif reg == SCR:
            value = self.scr
        self._update_irq()
        return value

    def io_write(self, port: int, size: int, value: int) -> None:
        reg = (port - self.base) & 7
        value &= 0xFF
        if reg == RBR_THR:
            if self.lcr & LCR_DLAB:
                self.dll = value
            else:
                self.transmitted += 1
                if self.mcr & MCR_LOOP:
                    self.receive(bytes((value,)))
                else:
                    self.output(bytes((value,)))
                self.thr_empty_pending = True  # sent at once: THR is empty again
        elif reg == IER:
            if self.lcr & LCR_DLAB:
                self.dlm = value
            else:
                newly = value & ~self.ier
                self.ier = value & 0x0F
                if newly & IER_THRI:  # enabling ETBEI with THR empty interrupts at once
                    self.thr_empty_pending = True
        elif reg == IIR_FCR:
            if value & FCR_CLEAR_RX:
                self.rx.clear()
            self.fcr = value & 0xC9
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            old = self._msr() & 0xF0
            self.mcr = value & 0x1F
            if self.mcr & MCR_LOOP:
                new = self._msr() & 0xF0
                changed = old ^ new
                self.msr_delta |= ((changed >> 4) & (MSR_DCTS | MSR_DDSR | MSR_DDCD)) \
                    | (MSR_TERI if old & MSR_RI and not new & MSR_RI else 0)
        elif reg == SCR:
            self.scr = value
        self._update_irq()
