"""Probe: QEMU's savevm and loadvm on a KVM device, with bintest/bootfd.img.

Run inside the SVM lab (docs/qemu.md):
    invoke lab --cpu svm -- 'insmod $KVMPORT_KO && TMPDIR=/tmp python3 -m lab.probes.qemu_savevm \
        SECONDS QEMU-BINARY DEVICE [savevm|sync]'
Boots bootfd.img under QEMU (`-snapshot`: the floppy gets a temporary qcow2 overlay, which
holds the snapshot; `-no-shutdown`: QEMU stays after the guest powers off), and through
the human monitor on a unix socket: `savevm s1` while the guest waits for console input
(timers running, interrupts coming), lets it finish its self-check and power off, then
`loadvm s1` and `cont`: the guest must go on from the saved point to a second
`self-check PASS`.  Prints each step with its time, the monitor's answers, the console's
last lines and QEMU's stderr; exit status 0 only if the second self-check passed.

`sync` instead (no dirty logging needed): from the same point, ten rounds of `stop`,
`info registers` (QEMU reads every VCPU state: registers, XSAVE, XCRS, events, debug
registers) and `cont` (QEMU writes it all back), 0.3 s apart; the guest must go on to
`self-check PASS`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SAVE_AT = b"type a line within 5 s"
PASS = b"self-check PASS"
DOWN = b"reboot: "  # "System halted" or "Power down": the guest is done
IMAGE = Path(__file__).resolve().parents[2] / "bintest" / "bootfd.img"


class Monitor:
    """QEMU's human monitor on a unix socket: one command, the text up to the next prompt."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.sock.settimeout(timeout)
        self._read_to_prompt()

    def _read_to_prompt(self) -> str:
        buf = b""
        while not buf.rstrip().endswith(b"(qemu)"):
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        text = self._read_to_prompt()
        # the monitor echoes the line (with terminal escapes) and ends with the prompt
        lines = [ln.strip() for ln in text.replace("\r", "").split("\n")]
        return " | ".join(ln for ln in lines[1:] if ln and not ln.endswith("(qemu)"))


def main() -> int:
    seconds, qemu, device = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "savevm"
    with tempfile.TemporaryDirectory() as tmp:
        mon_path = Path(tmp) / "monitor.sock"
        argv = [qemu, "-accel", f"kvm,device={device}", "-machine", "pc,kernel-irqchip=off",
                "-m", "128", "-nographic", "-nodefaults", "-serial", "stdio", "-vga", "none",
                "-snapshot", "-no-shutdown", "-fda", str(IMAGE),
                "-monitor", f"unix:{mon_path},server=on,wait=off"]
        print("probe: " + " ".join(argv), flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        console = bytearray()
        changed = threading.Condition()

        def read_console() -> None:
            assert proc.stdout
            while chunk := os.read(proc.stdout.fileno(), 4096):
                with changed:
                    console.extend(chunk)
                    changed.notify_all()

        threading.Thread(target=read_console, daemon=True).start()

        def wait_for(text: bytes, count: int = 1) -> bool:
            with changed:
                return changed.wait_for(
                    lambda: console.count(text) >= count or proc.poll() is not None,
                    timeout=max(0.0, seconds - (time.monotonic() - t0))) and \
                    console.count(text) >= count

        def step(what: str) -> None:
            print(f"probe: {time.monotonic() - t0:7.1f} s  {what}", flush=True)

        ok = False
        try:
            mon = Monitor(mon_path, 120)
            if not wait_for(SAVE_AT):
                step("the guest never asked for console input")
            elif mode == "sync":
                for i in range(10):
                    mon.command("stop")
                    regs = mon.command("info registers")
                    mon.command("cont")
                    step(f"round {i}: {regs[:100]!r}")
                    time.sleep(0.3)
                ok = wait_for(PASS)
                step("self-check PASS" if ok else "no self-check PASS")
            else:
                step(f"savevm s1: {mon.command('savevm s1')!r}")
                step(f"info snapshots: {mon.command('info snapshots')!r}")
                if wait_for(PASS) and wait_for(DOWN):
                    step("first self-check PASS, halted")
                    step(f"loadvm s1: {mon.command('loadvm s1')!r}")
                    step(f"cont: {mon.command('cont')!r}")
                    step(f"info status: {mon.command('info status')!r}")
                    ok = wait_for(PASS, 2)
                    step("second self-check PASS" if ok else "no second self-check PASS")
                    if ok:
                        wait_for(DOWN, 2)
                else:
                    step("no first self-check PASS")
        except OSError as e:
            step(f"monitor: {e}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    tail = console.decode(errors="replace").replace("\r", "").splitlines()
    print(f"probe: {'PASS' if ok else 'FAIL'} on {device}; QEMU status {proc.returncode}; "
          f"self-check PASS seen {console.count(PASS)} times")
    print("probe: console tail:\n" + "\n".join("  | " + ln for ln in tail[-14:]))
    print("probe: QEMU stderr:\n" + "\n".join("  ! " + ln for ln in stderr.splitlines()[-15:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
