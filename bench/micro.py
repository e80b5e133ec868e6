"""Micro-benchmarks of a KVM device: exit round trips and guest compute speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bintest.build import build, mode_of
from pyhost import Hlt, IoOut, Kvm
from pyhost.abi import lib
from pyhost.raw import load_raw

C_LOOP = r"""
#include <errno.h>
#include <sys/ioctl.h>
/* KVM_RUN until the guest halts, counting exits: the driver's cost without Python's */
static long run_until_hlt(int fd, unsigned long kvm_run, volatile unsigned int *exit_reason)
{
    long exits = 0;
    for (;;) {
        if (ioctl(fd, kvm_run, 0) < 0)
            return -errno;
        exits++;
        if (*exit_reason == 5)  /* KVM_EXIT_HLT */
            return exits;
    }
}
"""


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    lower_is_better: bool = True


def _guest(kvm: Kvm, name: str, rcx: int):
    g = load_raw(kvm, build(name).read_bytes(), mode_of(name))  # type: ignore[arg-type]
    regs = g.vcpu.get_regs()
    regs.rcx = rcx
    g.vcpu.set_regs(regs)
    return g


def pio_python(kvm: Kvm, n: int) -> Figure:
    g = _guest(kvm, "bench_pio", n)
    t0 = time.perf_counter()
    exits = 0
    while isinstance(ex := g.vcpu.run(), IoOut):
        exits += 1
    elapsed = time.perf_counter() - t0
    g.close()
    assert isinstance(ex, Hlt) and exits == n, (ex, exits)
    return Figure("port-I/O exit round trip (Python loop)", elapsed / n * 1e6, "us")


def c_loop() -> Any:
    """The C exit loop (built on first use; build it before a lab without a compiler)."""
    from bintest.cbuild import build as cbuild

    return cbuild("bench_loop", "long run_until_hlt(int, unsigned long, volatile unsigned int *);",
                  C_LOOP)


def pio_c(kvm: Kvm, n: int) -> Figure:
    c = c_loop()
    g = _guest(kvm, "bench_pio", n)
    reason = c.ffi.cast("volatile unsigned int *", c.ffi.addressof(g.vcpu.kvm_run, "exit_reason"))
    t0 = time.perf_counter()
    exits = c.lib.run_until_hlt(g.vcpu.fd, lib.KVMP_RUN, reason)
    elapsed = time.perf_counter() - t0
    g.close()
    assert exits == n + 1, exits
    return Figure("port-I/O exit round trip (C loop)", elapsed / n * 1e6, "us")


def compute(kvm: Kvm, n: int) -> Figure:
    g = _guest(kvm, "bench_compute", n)
    t0 = time.perf_counter()
    ex = g.vcpu.run()
    elapsed = time.perf_counter() - t0
    g.close()
    assert isinstance(ex, Hlt), ex
    return Figure(f"compute loop, {n} iterations", elapsed * 1e3, "ms")


BENCHMARKS: list[tuple[Callable[[Kvm, int], Figure], int]] = [
    (pio_python, 5_000), (pio_c, 20_000), (compute, 20_000_000)]


def best_of(fn: Callable[[Kvm, int], Figure], kvm: Kvm, n: int, runs: int) -> Figure:
    results = [fn(kvm, n) for _ in range(runs)]
    return min(results, key=lambda f: f.value)


def boot(device: str) -> Figure:
    """bootfd.img under pyhost: seconds from the process start to the guest's banner."""
    import sys

    from .boot import IMAGE, timed

    r = timed([sys.executable, "-m", "pyhost", "boot", str(IMAGE), "--device", device])
    assert r["banner"] is not None, f"no banner from {device}: {r['stderr']}"
    return Figure("bootfd.img to the banner (pyhost boot)", r["banner"], "s")


# QEMU machines for qemu_boot: QEMU's default devices (VGA, e1000, ...), and the light one
QEMU_MACHINES = {
    "default devices": ["-nographic"],
    "light": ["-nographic", "-nodefaults", "-serial", "stdio", "-vga", "none"],
}


def qemu_boot(device: str, qemu: str, machine: str) -> Figure:
    """bootfd.img from the floppy (SeaBIOS, SYSLINUX) under QEMU on `device` with its
    userspace irqchip: seconds from the process start to the guest's banner."""
    from .boot import IMAGE, timed

    argv = [qemu, "-accel", f"kvm,device={device}", "-machine", "pc,kernel-irqchip=off",
            "-m", "128", "-snapshot", *QEMU_MACHINES[machine], "-fda", str(IMAGE)]
    r = timed(argv, stop=True, timeout=300)
    assert r["banner"] is not None, f"no banner from QEMU on {device}: {r['stderr']}"
    return Figure(f"bootfd.img to the banner (QEMU, {machine})", r["banner"], "s")
