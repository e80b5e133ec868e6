"""Probe: does L1 get control while an L2 guest loops without exiting?

Run inside a lab: `invoke lab --cpu vmx --no-module -- python3 -m lab.probes.l2_timer 20000000`.
It runs a real-mode loop of N iterations (then OUT, HLT) on /dev/kvm in one thread while
the main thread wakes every 50 ms, and prints how often it woke, the longest gap, and
kvm's debugfs exit counters over the run. On hardware the main thread keeps waking and
irq_exits grows; under Bochs 2.7 neither happens (docs/lab.md).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time

from pyhost import Kvm
from pyhost.raw import load_raw

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000
# real mode: mov ecx, N; 1: dec ecx; jnz 1b; out 0x10, al; hlt
code = b"\x66\xb9" + struct.pack("<I", N) + b"\x66\x49\x75\xfc\xe6\x10\xf4"
dbg = "/sys/kernel/debug/kvm"
if not os.path.isdir(dbg):
    os.system("mount -t debugfs none /sys/kernel/debug")


def stat(name: str) -> int:
    try:
        return int(open(f"{dbg}/{name}").read())
    except OSError:
        return -1


with Kvm("/dev/kvm") as kvm:
    g = load_raw(kvm, code, "real")
    out: list[object] = []
    before = {k: stat(k) for k in ("exits", "irq_exits", "signal_exits")}
    t = threading.Thread(target=lambda: out.append(g.vcpu.run()), daemon=True)
    t0 = time.monotonic()
    t.start()
    ticks = []
    while t.is_alive() and time.monotonic() - t0 < 600:
        time.sleep(0.05)
        ticks.append(time.monotonic() - t0)
    gaps = [b - a for a, b in zip([0.0, *ticks[:-1]], ticks, strict=True)]
    after = {k: stat(k) for k in before}
    print(
        f"loop of {N}: {out} after {time.monotonic() - t0:.2f} s; main thread woke "
        f"{len(ticks)} times, max gap {max(gaps or [0]):.2f} s; "
        f"kvm stats delta { {k: after[k] - before[k] for k in before} }",
        flush=True,
    )
