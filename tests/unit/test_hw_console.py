"""The console's terminal handling: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A; a pipe
passes everything through."""

from __future__ import annotations

import os
import time

from pyhost.hw.console import Console


def test_escape_sequences_on_a_terminal():
    null = os.open(os.devnull, os.O_WRONLY)
    c = Console(lambda b: None, lambda: None, stdin_fd=0, stdout_fd=null)
    c.is_tty = True
    assert c.filter(b"ls\r") == (b"ls\r", False)
    assert c.filter(b"a\x01\x01b") == (b"a\x01b", False)
    assert c.filter(b"x\x01") == (b"x", False)  # escape pending across reads
    assert c.filter(b"x") == (b"", True)
    assert c.filter(b"\x01?") == (b"", False)  # anything else: help, nothing sent
    os.close(null)


def test_pipe_input_reaches_the_guest_and_output_is_written():
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    got: list[bytes] = []
    c = Console(got.append, lambda: None, stdin_fd=r, stdout_fd=out_w)
    assert not c.is_tty
    c.start()
    os.write(w, b"hello\x01x\n")
    os.close(w)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    c.stop()
    assert b"".join(got) == b"hello\x01x\n"
    c.write(b"guest says hi")
    assert os.read(out_r, 100) == b"guest says hi"
    for fd in (r, out_r, out_w):
        os.close(fd)
