"""Probe: how far a QEMU run on a KVM device gets, and what its VCPU exits were.

Run inside the SVM lab (docs/qemu.md):
    invoke lab --cpu svm -- 'insmod $KVMPORT_KO && python3 -m lab.probes.qemu_boot \
        SECONDS QEMU-BINARY QEMU-ARGS...'
Runs QEMU for at most SECONDS with `-trace kvm_run_exit` (QEMU's log backend) and prints,
with the time since start: when each milestone appeared on its serial console (SeaBIOS,
SYSLINUX, `boot:`, the bootfd banner, power-off), the console's last lines, QEMU's
stderr, its exit status, and the KVM_RUN exits counted by reason, in total and in the
last 10 seconds (a stuck guest exits for the same few reasons over and over, or not at
all; a slow one keeps moving). QEMU is stopped once the guest has halted.
With PROBE_CONSOLE=FILE in the environment the whole console is written to FILE.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MILESTONES = (b"SeaBIOS", b"SYSLINUX", b"boot:", b"kvmport bootfd: hello from the guest",
              b"reboot: System halted", b"reboot: Power down")
FINAL = MILESTONES[-2:]  # the guest is done: stop QEMU (it keeps a halted guest forever)
EXIT_NAMES = {2: "IO", 5: "HLT", 6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN",
              9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR"}
TRACE = re.compile(rb"kvm_run_exit cpu_index (\d+), reason (\d+)")


def main() -> int:
    seconds, qemu, args = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trace.log"
        argv = [qemu, *args, "-trace", "kvm_run_exit", "-D", str(log)]
        print("probe: " + " ".join(argv), flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        console = bytearray()
        seen: dict[bytes, float] = {}

        def read_console() -> None:
            assert proc.stdout
            while chunk := os.read(proc.stdout.fileno(), 4096):
                console.extend(chunk)
                for m in MILESTONES:
                    if m not in seen and m in console:
                        seen[m] = time.monotonic() - t0
                        print(f"probe: {seen[m]:7.1f} s  {m.decode()}", flush=True)

        reader = threading.Thread(target=read_console, daemon=True)
        reader.start()
        marks: list[tuple[float, int]] = []  # (time, trace-log size): exits of the last 10 s
        while (proc.poll() is None and time.monotonic() - t0 < seconds
               and not any(m in seen for m in FINAL)):
            time.sleep(1)
            marks.append((time.monotonic() - t0, log.stat().st_size if log.exists() else 0))
        timed_out = proc.poll() is None
        if timed_out:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        elapsed = time.monotonic() - t0
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        trace = log.read_bytes() if log.exists() else b""
    if os.environ.get("PROBE_CONSOLE"):
        Path(os.environ["PROBE_CONSOLE"]).write_bytes(bytes(console))
    how = "stopped at the end" if any(m in seen for m in FINAL) else "timed out"
    print(f"probe: {how if timed_out else 'exited'} after {elapsed:.1f} s, "
          f"status {proc.returncode}")
    print("probe: console tail:\n" + "\n".join(
        "  | " + ln for ln in console.decode(errors="replace").splitlines()[-8:]))
    print("probe: QEMU stderr:\n" + "\n".join("  ! " + ln for ln in stderr.splitlines()[-15:]))
    total = collections.Counter(int(m.group(2)) for m in TRACE.finditer(trace))
    cut = next((size for t, size in marks if t >= elapsed - 10), len(trace))
    recent = collections.Counter(int(m.group(2)) for m in TRACE.finditer(trace[cut:]))
    for name, counts in (("all", total), ("last 10 s", recent)):
        shown = ", ".join(f"{EXIT_NAMES.get(r, r)} {n}" for r, n in counts.most_common())
        print(f"probe: KVM_RUN exits to QEMU ({name}): {sum(counts.values())}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
