"""Boot bintest/bootfd.img on plain QEMU (BIOS, TCG, floppy) and check the guest's self-check.

Needs Debian's qemu-system-x86 (qemu-system-i386 and its SeaBIOS); it installs nothing itself.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "bintest" / "bootfd.img"
QEMU = "qemu-system-i386"
TIMEOUT_S = 180.0
INPUT_LINE = "kvmport-ci-input 42"


class SerialLog:
    """Collects QEMU's serial output (stdout) in a thread, with the time each line arrived."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("latin-1").replace("\x1b", "").rstrip("\r\n")
            with self.cond:
                self.lines.append((time.monotonic() - self.t0, line))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, text: str, deadline: float) -> float | None:
        """Seconds since start when a line containing `text` arrived, or None at the deadline."""
        with self.cond:
            while True:
                for t, line in self.lines:
                    if text in line:
                        return t
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.thread.is_alive()):
                    return None
                self.cond.wait(min(left, 0.5))

    def text(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.lines)


def test_bootfd_boots_on_qemu_bios_floppy(tmp_path: Path) -> None:
    if shutil.which(QEMU) is None:
        pytest.fail(
            f"{QEMU} not found: install Debian's qemu-system-x86 package "
            "(apt-get install -y --no-install-recommends qemu-system-x86) to run the bootfd check"
        )
    assert IMAGE.exists(), f"{IMAGE} missing: run `invoke build-bootfd`"
    cmd = [
        QEMU, "-fda", str(IMAGE), "-snapshot", "-boot", "a", "-m", "64",
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    log = SerialLog(proc)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        t_banner = log.wait_for("kvmport bootfd: hello from the guest", deadline)
        assert t_banner is not None, f"no banner within {TIMEOUT_S:.0f} s:\n{log.text()}"
        t_prompt = log.wait_for("kvmport bootfd: type a line", deadline)
        assert t_prompt is not None, f"no input prompt:\n{log.text()}"
        assert proc.stdin is not None
        proc.stdin.write(INPUT_LINE.encode() + b"\n")
        proc.stdin.flush()
        t_halt = log.wait_for("System halted", deadline)
        assert t_halt is not None, f"the guest did not halt:\n{log.text()}"
    finally:
        proc.kill()
        proc.wait()
        log.thread.join(timeout=5)
    out = log.text()
    print(f"\nbootfd on QEMU TCG: banner at {t_banner:.1f} s, halted at {t_halt:.1f} s")
    assert "kvmport bootfd: kernel Linux 6.1." in out
    assert "i686" in out
    for check in ("uname", "memory", "uptime", "timer"):
        assert f"kvmport bootfd: check {check} ok" in out, out
    assert f"kvmport bootfd: console input: '{INPUT_LINE}'" in out, out
    assert "kvmport bootfd: self-check PASS" in out, out
    assert "kvmport bootfd: powering off" in out


def _extract(tmp_path: Path, label: str | None) -> tuple[Path, Path, str]:
    """Kernel, initrd and command line of `label`, read from the image with pyhost.boot."""
    from pyhost.boot.bootcfg import find_boot_entry
    from pyhost.boot.fat import FatImage

    fs = FatImage(IMAGE.read_bytes())
    entry = find_boot_entry(fs, label)
    assert entry.initrd is not None
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.gz"
    kernel.write_bytes(fs.read_file(entry.kernel))
    initrd.write_bytes(fs.read_file(entry.initrd))
    return kernel, initrd, entry.cmdline


def _qemu_direct(
    kernel: Path, initrd: Path, cmdline: str, stdin: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} not found: install Debian's qemu-system-x86 package")
    cmd = [
        QEMU, "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-m", "32", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_bootfd_reboot_ends_qemu_by_triple_fault(tmp_path: Path) -> None:
    """kvmport.end=reboot with the image's reboot=t: the guest resets and QEMU (-no-reboot)
    exits by itself, the way a VMM sees KVM_EXIT_SHUTDOWN."""
    kernel, initrd, cmdline = _extract(tmp_path, None)
    assert "reboot=t" in cmdline.split()
    # No console input (stdin is /dev/null): the self-check reports 'no input'.
    proc = _qemu_direct(kernel, initrd, cmdline + " kvmport.end=reboot", subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    text = out.decode("latin-1")
    assert proc.returncode == 0, text
    assert "kvmport bootfd: console input: no input" in text
    assert "kvmport bootfd: self-check PASS" in text
    assert "kvmport bootfd: rebooting" in text


def test_bootfd_shell_label(tmp_path: Path) -> None:
    kernel, initrd, cmdline = _extract(tmp_path, "shell")
    assert "kvmport.shell=1" in cmdline.split()
    proc = _qemu_direct(kernel, initrd, cmdline)
    log = SerialLog(proc)
    deadline = time.monotonic() + TIMEOUT_S
    assert proc.stdin is not None
    try:
        assert log.wait_for("kvmport bootfd: shell", deadline) is not None, log.text()
        for line in ("echo shell works", "cat /proc/version", "ls /dev", "poweroff"):
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            time.sleep(0.3)
        assert log.wait_for("System halted", deadline) is not None, log.text()
    finally:
        proc.kill()
        proc.wait()
        log.thread.join(timeout=5)
    out = log.text()
    assert "shell works" in out.replace("echo shell works", "")
    assert "Linux version 6.1." in out
    assert "ttyS0" in out
    assert "self-check" not in out
