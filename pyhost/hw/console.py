"""The guest's serial console on the user's terminal.

On a terminal: raw mode (every key goes to the guest, Ctrl-C included), restored at the
end; Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A. Otherwise (a pipe, a file,
/dev/null) stdin is passed through as it comes, and its end is just the end of input.
A reader thread feeds the bytes to `on_input` (which takes the machine's lock, fills the
UART and kicks the VCPU).
"""

from __future__ import annotations

import os
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import Any

ESCAPE = 0x01  # Ctrl-A
HELP = b"\r\n[pyhost: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A]\r\n"


class Console:
    def __init__(self, on_input: Callable[[bytes], None], on_quit: Callable[[], None],
                 stdin_fd: int | None = None, stdout_fd: int | None = None) -> None:
        self.on_input = on_input
        self.on_quit = on_quit
        self.stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
        self.is_tty = os.isatty(self.stdin_fd)
        self._saved: list[Any] | None = None
        self._escape = False
        self._thread: threading.Thread | None = None

    def write(self, data: bytes) -> None:
        """Guest output: straight to stdout, unbuffered (the guest's timing is the user's)."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.stdout_fd, view)
            except BrokenPipeError:
                return  # nobody reads any more; the guest need not know
            view = view[n:]

    def start(self) -> None:
        if self.is_tty:
            self._saved = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd)
        self._thread = threading.Thread(target=self._read_loop, name="console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def filter(self, data: bytes) -> tuple[bytes, bool]:
        """Terminal input -> (bytes for the guest, quit requested), handling Ctrl-A."""
        if not self.is_tty:
            return data, False
        out = bytearray()
        for b in data:
            if self._escape:
                self._escape = False
                if b in (ord("x"), ord("X")):
                    return bytes(out), True
                if b == ESCAPE:
                    out.append(ESCAPE)
                else:
                    self.write(HELP)
            elif b == ESCAPE:
                self._escape = True
            else:
                out.append(b)
        return bytes(out), False

    def _read_loop(self) -> None:
        while True:
            try:
                data = os.read(self.stdin_fd, 1024)
            except OSError:
                return
            if not data:
                return  # end of input: the guest just gets no more
            forward, quit_ = self.filter(data)
            if forward:
                self.on_input(forward)
            if quit_:
                self.on_quit()
                return
