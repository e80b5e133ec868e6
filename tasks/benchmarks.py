"""Benchmark tasks: bench, bench-boot. What they measure, and how, is bench/'s (run inside
the SVM lab, whose Python has no invoke)."""

from __future__ import annotations

import shlex
import sys

from invoke import task
from invoke.context import Context

from . import core

PY = core.PY


@task(help={"runs": "runs per figure (the best counts)",
            "cpu": "lab: svm (kvm_amd vs kvmport's SVM backend) or vmx (kvm_intel vs its "
                   "VMX backend, under Bochs: slow)"})
def bench(c: Context, runs: int = 3, cpu: str = "svm") -> None:
    """In a lab, on Linux KVM and kvmport: exit round trips, a compute loop and
    bootfd.img to its banner under pyhost and (SVM lab) under the patched QEMU, with ratios."""
    core.build_bintest(c)
    c.run(f"{PY} -c 'from bench.micro import c_loop; c_loop()'")
    qemu = ""
    if cpu == "svm":  # the VMX lab (Bochs) has no QEMU, and nested TCG there takes hours
        from qemu_build import build as build_qemu

        qemu = f" --qemu {shlex.quote(str(build_qemu()))}"
    inner = (f"insmod $KVMPORT_KO && python3 -m bench --runs {runs} --boot{qemu} "
             "--device /dev/kvm --device /dev/kvmport; s=$?; rmmod kvmport; exit $s")
    c.run(f"{PY} -m invoke lab --cpu {shlex.quote(cpu)} -- {shlex.quote(inner)}", pty=False)


@task(help={"devices": "comma-separated devices for pyhost (default /dev/kvm,/dev/kvmport)",
            "runs": "runs per case", "cpu": "lab: svm (vmx works but is very slow)"})
def bench_boot(c: Context, devices: str = "/dev/kvm,/dev/kvmport", runs: int = 1,
               cpu: str = "svm") -> None:
    """Time bootfd.img to its banner: pyhost on each device vs QEMU, inside the lab."""
    devs = [d for d in devices.split(",") if d]
    inner = f"python3 -m bench.boot --runs {runs} " + " ".join(shlex.quote(d) for d in devs)
    if "/dev/kvmport" in devs:
        inner = f"insmod $KVMPORT_KO && {inner}"
    c.run(f"{shlex.quote(sys.executable)} -m invoke lab --cpu {cpu} -- {shlex.quote(inner)}",
          pty=False)
