"""`python -m pyhost boot bintest/bootfd.img` to the end, on each --device (lab only: the
host's /dev/kvm emulates at ~0.5 MIPS, far too slow for a kernel boot).

    invoke lab --cpu svm -- python3 -m pytest -q -p no:cacheprovider \
        tests/lab/test_boot.py --device /dev/kvm
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "bintest" / "bootfd.img"
# nested boots are slow: ~45 s measured under QEMU TCG, ~430 s under Bochs (docs/boot.md)
TIMEOUT = 1800 if os.environ.get("KVMPORT_LAB") == "vmx" else 600
BANNER = "kvmport bootfd: hello from the guest"
PROMPT = "type a line within 5 s"


class Boot:
    """pyhost boot in a subprocess, its console output collected as it comes."""

    def __init__(self, device: str, *extra: str, argv: list[str] | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "pyhost", "boot", str(IMAGE), "--device", device,
                     "-v", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        self.out = bytearray()
        self.err = b""
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            with self.cond:
                self.out += chunk
                self.cond.notify_all()

    @property
    def text(self) -> str:
        return self.out.decode("latin-1")

    def wait_for(self, what: str, timeout: float) -> bool:
        deadline = self.started + timeout
        with self.cond:
            while what not in self.text:
                if self.proc.poll() is not None and not self.reader.is_alive():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1))
            self.seen.setdefault(what, time.monotonic() - self.started)
        return True

    def self_check(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the banner, answer the init's input prompt, and run to the end."""
        if not self.wait_for(BANNER, timeout):
            status, out, err = self.finish(timeout)
            pytest.fail(f"no banner (exit status {status}); console:\n{out}\nstderr:\n{err}")
        if self.wait_for(PROMPT, timeout):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"hello-serial\n")
            self.proc.stdin.flush()
        return self.finish(timeout)

    def close_input(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def finish(self, timeout: float) -> tuple[int, str, str]:
        self.close_input()
        try:
            self.proc.wait(timeout=max(1, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # pyhost then reports where the guest was
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(5)
            self.err_reader.join(5)
            pytest.fail(f"pyhost boot still running after {timeout} s; console:\n{self.text}"
                        f"\nstderr:\n{self.err.decode(errors='replace')}")
        self.reader.join(5)
        self.err_reader.join(5)
        return self.proc.returncode, self.text, self.err.decode(errors="replace")


def test_bootfd_self_check_passes(device):
    boot = Boot(device)
    status, out, err = boot.self_check(TIMEOUT)
    print(f"{device}: banner after {boot.seen.get(BANNER, -1):.1f} s, "
          f"total {time.monotonic() - boot.started:.1f} s\n{err}")
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert "console input: 'hello-serial'" in out, out
    assert "check timer ok" in out and "check uptime ok" in out
    assert status == 0, err
    assert "halted with interrupts off (power-off)" in err
    assert "Traceback" not in err


def test_bootfd_reboot_is_a_triple_fault(device):
    """kvmport.end=reboot with the image's reboot=t: the kernel triple-faults on purpose."""
    boot = Boot(device, "--append", "kvmport.end=reboot")
    boot.close_input()
    status, out, err = boot.finish(TIMEOUT)
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert status == 3, err
    assert "pyhost: the guest triple-faulted (KVM_EXIT_SHUTDOWN)\n" in err, err
    assert "pyhost: registers: rip=" in err and "Traceback" not in err


def test_bootfd_keyboard_controller_reset_ends_cleanly(device):
    """reboot=k after the image's reboot=t: the kernel resets through the i8042."""
    boot = Boot(device, "--append", "kvmport.end=reboot reboot=k")
    boot.close_input()
    status, out, err = boot.finish(TIMEOUT)
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert status == 0, err
    assert "i8042 reset" in err, err
