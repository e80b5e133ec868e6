"""Print benchmark figures for each device and their ratios to the first (the reference).

    python -m bench --device /dev/kvm --device /dev/kvmport [--runs 3] [--boot] [--qemu PATH]

With --qemu, QEMU (patched: `-accel kvm,device=`) boots bintest/bootfd.img on each device too,
and the last lines compare pyhost on each device with QEMU on the reference device.
"""

from __future__ import annotations

import argparse
import sys

from pyhost import Kvm

from .memory import per_vm_and_vcpu
from .micro import BENCHMARKS, QEMU_MACHINES, Figure, best_of, boot, qemu_boot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", action="append", required=True,
                   help="device to measure (repeatable; the first is the reference)")
    p.add_argument("--runs", type=int, default=3, help="runs per figure; the best counts")
    p.add_argument("--boot", action="store_true",
                   help="also boot bintest/bootfd.img to its banner (once per device)")
    p.add_argument("--qemu", metavar="PATH",
                   help="also boot bintest/bootfd.img under this QEMU (`invoke build-qemu`)")
    args = p.parse_args(argv)

    table: dict[str, dict[str, Figure]] = {}
    for device in args.device:
        with Kvm(device) as kvm:
            for fn, n in BENCHMARKS:
                f = best_of(fn, kvm, n, args.runs)
                table.setdefault(f.name, {})[device] = f
            for f in min((per_vm_and_vcpu(kvm) for _ in range(args.runs)),
                         key=lambda fs: fs[0].value):
                table.setdefault(f.name, {})[device] = f
        if args.boot:
            f = boot(device)
            table.setdefault(f.name, {})[device] = f
        if args.qemu:
            for machine in QEMU_MACHINES:
                f = min((qemu_boot(device, args.qemu, machine) for _ in range(args.runs)),
                        key=lambda fig: fig.value)
                table.setdefault(f.name, {})[device] = f
    ref = args.device[0]
    width = max(len(f"{name} ({row[ref].unit})") for name, row in table.items()) + 2
    head = f"{'benchmark':<{width}}" + "".join(f"{d:>16}" for d in args.device)
    head += "".join(f"{'ratio ' + d.rsplit('/', 1)[-1]:>18}" for d in args.device[1:])
    print(head)
    for name, row in table.items():
        unit = next(iter(row.values())).unit
        line = f"{name + ' (' + unit + ')':<{width}}"
        line += "".join(f"{row[d].value:>16.2f}" for d in args.device)
        line += "".join(f"{row[d].value / row[ref].value:>18.2f}" if row[ref].value > 0
                        else f"{'-':>18}" for d in args.device[1:])
        print(line)
    print(f"(best of {args.runs}; ratio = device / {ref}; lower is faster)")
    pyhost_row = table.get("bootfd.img to the banner (pyhost boot)")
    qemu_row = table.get("bootfd.img to the banner (QEMU, default devices)")
    if pyhost_row and qemu_row:
        for d in args.device:
            ratio = pyhost_row[d].value / qemu_row[ref].value
            print(f"pyhost on {d} vs QEMU (default devices) on {ref}: "
                  f"{pyhost_row[d].value:.2f} s / {qemu_row[ref].value:.2f} s = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
