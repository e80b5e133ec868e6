"""Inside the debug lab: trigger a kmemleak scan, then list every kernel report since boot.

    python3 -m lab.debugkernel.check

Reports are KASAN, KFENCE, lockdep, DEBUG_ATOMIC_SLEEP (BUG: sleeping function ...),
any other BUG/WARNING/oops, lockups and RCU stalls in dmesg, and the suspected leaks
kmemleak lists in /sys/kernel/debug/kmemleak. Prints each with its dmesg lines (or the
kmemleak record); exits 1 if there is any, 0 if none.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

DEBUGFS = Path("/sys/kernel/debug")
KMEMLEAK = DEBUGFS / "kmemleak"
# the first line of a report; KASAN/KFENCE/lockdep/atomic-sleep reports start with BUG: or
# WARNING: too, the others are listed for what they name
REPORT = re.compile(
    r"BUG:|WARNING:|Oops|general protection fault|kernel BUG|UBSAN:|"
    r"soft lockup|hard LOCKUP|blocked for more than|rcu: INFO:|self-detected stall|"
    r"possible circular locking|possible recursive locking|inconsistent lock state|"
    r"suspicious RCU usage|kmemleak: .*(suspected|disabled)"
)
# lines a report spans after its first line (the register dump and the call trace)
REPORT_LINES = 60


def dmesg() -> list[str]:
    return subprocess.run(["dmesg", "--color=never"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def kmemleak_scan() -> str:
    """Scan twice (an object allocated just before the first scan may look orphaned to it)
    and return the records of what is still unreferenced."""
    if not KMEMLEAK.exists():
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS)], check=False)
    if not KMEMLEAK.exists():
        raise SystemExit(f"check: {KMEMLEAK} missing (CONFIG_DEBUG_KMEMLEAK, debugfs)")
    for _ in range(2):
        t0 = time.monotonic()
        KMEMLEAK.write_text("scan")
        print(f"check: kmemleak scan took {time.monotonic() - t0:.1f} s", flush=True)
    return KMEMLEAK.read_text()


def main() -> int:
    leaks = kmemleak_scan()
    lines = dmesg()
    reports: list[list[str]] = []
    i = 0
    while i < len(lines):
        if REPORT.search(lines[i]):
            reports.append(lines[i:i + REPORT_LINES])
            i += REPORT_LINES
        else:
            i += 1
    records = [r for r in re.split(r"(?m)^(?=unreferenced object)", leaks) if r.strip()]
    for n, rep in enumerate(reports, 1):
        print(f"---- dmesg report {n}/{len(reports)} ----")
        print("\n".join(rep))
    for n, rec in enumerate(records, 1):
        print(f"---- kmemleak record {n}/{len(records)} ----")
        print(rec.rstrip())
    firsts = [r[0] for r in reports]
    print(f"check: {len(reports)} dmesg reports, {len(records)} kmemleak records", flush=True)
    for f in firsts:
        print(f"check:   {f}")
    return 1 if reports or records else 0


if __name__ == "__main__":
    sys.exit(main())
