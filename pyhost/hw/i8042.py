"""The i8042 keyboard controller (data port 0x60, status/command port 0x64), without a
keyboard: enough for a guest to probe it and to reset the machine (command 0xFE pulses
the CPU's reset line: `on_reset` is called and the machine ends cleanly).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

DATA_PORT, COMMAND_PORT = 0x60, 0x64
STATUS_OBF, STATUS_IBF, STATUS_SYS, STATUS_CMD = 0x01, 0x02, 0x04, 0x08
CMD_READ_CCB, CMD_WRITE_CCB = 0x20, 0x60
CMD_SELF_TEST, CMD_KBD_TEST, CMD_AUX_TEST = 0xAA, 0xAB, 0xA9
CMD_READ_OUTPUT, CMD_WRITE_OUTPUT = 0xD0, 0xD1
CMD_RESET = 0xFE


class I8042:
    ports = ((DATA_PORT, 1), (COMMAND_PORT, 1))

    def __init__(self, on_reset: Callable[[], None]) -> None:
        self.on_reset = on_reset
        self.ccb = 0x45  # keyboard interrupt and translation on, system flag
        self.output: deque[int] = deque()
        self.pending_command: int | None = None  # awaiting its data byte on port 0x60
        self.last_was_command = False
        self.output_port = 0x03  # A20 on, reset line inactive

    def io_read(self, port: int, size: int) -> int:
        if port == COMMAND_PORT:
            return (STATUS_OBF if self.output else 0) | STATUS_SYS \
                | (STATUS_CMD if self.last_was_command else 0)
        return self.output.popleft() if self.output else 0

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == COMMAND_PORT:
            self.last_was_command = True
            self._command(value)
            return
        self.last_was_command = False
        cmd, self.pending_command = self.pending_command, None
        if cmd == CMD_WRITE_CCB:
            self.ccb = value
        elif cmd == CMD_WRITE_OUTPUT:
            self.output_port = value
            if not value & 1:
                self.on_reset()
        else:
            self.output.append(0xFE)  # no keyboard: "resend" to anything sent to it

    def _command(self, cmd: int) -> None:
        if cmd == CMD_READ_CCB:
            self.output.append(self.ccb)
        elif cmd in (CMD_WRITE_CCB, CMD_WRITE_OUTPUT):
            self.pending_command = cmd
        elif cmd == CMD_SELF_TEST:
            self.output.append(0x55)
        elif cmd in (CMD_KBD_TEST, CMD_AUX_TEST):
            self.output.append(0x00)
        elif cmd == CMD_READ_OUTPUT:
            self.output.append(self.output_port)
        elif cmd & 0xF0 == 0xF0 and not cmd & 1:  # pulse output lines, bit 0 = CPU reset
            self.on_reset()
