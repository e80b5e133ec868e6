"""Boot benchmark: bintest/bootfd.img timed to its banner under pyhost on each device and
under plain QEMU, all inside the same lab (`invoke bench-boot` runs it there):

    python3 -m bench.boot [--runs N] DEVICE...

`timed()` is also `python -m bench --boot`'s measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "bintest" / "bootfd.img"
BANNER = b"kvmport bootfd: hello from the guest"
END = b"reboot: System halted"
TIMEOUT = 900.0

def timed(argv: list[str], until: bytes = END, timeout: float = TIMEOUT,
           stop: bool = False) -> dict[str, Any]:
    """Run argv; seconds until BANNER and until `until` appear on its stdout, then (stop)
    kill it or wait for its exit."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    out = bytearray()
    err = bytearray()
    seen: dict[bytes, float] = {}
    done = threading.Event()

    def err_reader() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
            err.extend(chunk)
            if b"pyhost: booting " in err and b"run" not in seen:
                seen[b"run"] = time.monotonic() - t0  # printed just before the first KVM_RUN

    def reader() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            out.extend(chunk)
            for mark in (BANNER, until):
                if mark not in seen and mark in out:
                    seen[mark] = time.monotonic() - t0
            if until in seen:
                done.set()
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    eth = threading.Thread(target=err_reader, daemon=True)
    eth.start()
    done.wait(timeout)
    if stop or until not in seen:
        proc.kill()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    th.join(5)
    eth.join(5)
    total = time.monotonic() - t0
    return {"banner": seen.get(BANNER), "end": seen.get(until), "total": total,
            "run": seen.get(b"run"), "status": proc.returncode,
            "stderr": err.decode(errors="replace").strip()}


def measure(devices: list[str], runs: int = 1) -> int:
    """In the lab: each device under pyhost, then QEMU TCG from the floppy (BIOS,
    SYSLINUX) and by direct kernel load; one line per run, then a summary."""
    py = sys.executable
    kernel_args = ["-kernel", "build/bench-boot/vmlinuz", "-initrd", "build/bench-boot/initrd.gz",
                   "-append", "console=ttyS0 reboot=t io_delay=none quiet panic=-1"]
    from pyhost.boot.fat import FatImage

    fs = FatImage(IMAGE.read_bytes())
    (ROOT / "build" / "bench-boot").mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.gz"):
        (ROOT / "build" / "bench-boot" / name).write_bytes(fs.read_file("/" + name))
    qemu = ["qemu-system-i386", "-m", "64", "-no-reboot", "-snapshot",
            "-monitor", "none", "-serial", "stdio", "-display", "none"]
    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for dev in devices:
        cases.append((f"pyhost {dev}", lambda d=dev: timed(  # type: ignore[misc]
            [py, "-m", "pyhost", "boot", str(IMAGE), "--device", d, "-v"])))
    cases.append(("qemu TCG -fda (BIOS, SYSLINUX)", lambda: timed(
        [*qemu, "-fda", str(IMAGE), "-boot", "a"], stop=True)))
    cases.append(("qemu TCG -kernel", lambda: timed([*qemu, *kernel_args], stop=True)))
    if os.path.exists("/dev/kvm") and os.environ.get("KVMPORT_LAB"):  # not the host's PVM
        cases.append(("qemu KVM -kernel (userspace PIC/PIT)", lambda: timed(
            [*qemu, "-accel", "kvm", "-machine", "pc,kernel-irqchip=off", *kernel_args],
            stop=True)))
    results: dict[str, list[dict[str, Any]]] = {}
    for name, fn in cases:
        for i in range(runs):
            r = fn()
            results.setdefault(name, []).append(r)
            b = "-" if r["banner"] is None else f"{r['banner']:.1f} s"
            e = "-" if r["end"] is None else f"{r['end']:.1f} s"
            since = "" if r["run"] is None or r["banner"] is None else \
                f" ({r['banner'] - r['run']:.1f} s after the first KVM_RUN, " \
                f"{r['run']:.1f} s of Python start-up and loading before it)"
            print(f"bench-boot: {name} run {i + 1}: banner {b}{since}, halt message {e}, "
                  f"process {r['total']:.1f} s, status {r['status']}", flush=True)
            if name.startswith("pyhost"):
                for line in r["stderr"].splitlines():
                    if "guest TSC" in line or "exits" in line:
                        print(f"bench-boot:   {line}", flush=True)
    ref = min((r["banner"] for r in results.get("qemu TCG -fda (BIOS, SYSLINUX)", [])
               if r["banner"]), default=None)
    print("bench-boot: summary: best time to the banner from process start, ratio to qemu TCG "
          "-fda; for pyhost also from its first KVM_RUN")
    ok = True
    for name, rs in results.items():
        times = [r["banner"] for r in rs if r["banner"] is not None]
        if not times:
            ok = False
            print(f"  {name:<40} no banner")
            continue
        best = min(times)
        ratio = f"{best / ref:.1f}x" if ref else "-"
        runs_ = [r["banner"] - r["run"] for r in rs if r["banner"] is not None and r["run"]]
        extra = f"   from first KVM_RUN {min(runs_):.1f} s" if runs_ else ""
        print(f"  {name:<40} {best:7.1f} s  {ratio:>6}{extra}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.boot",
                                description="Time bootfd.img to its banner: pyhost on each "
                                "DEVICE, then QEMU.")
    p.add_argument("--runs", type=int, default=1, help="runs per case")
    p.add_argument("devices", nargs="+", metavar="DEVICE", help="KVM device for pyhost")
    args = p.parse_args(argv)
    return measure(args.devices, args.runs)


if __name__ == "__main__":
    sys.exit(main())
