"""Kernel memory a device spends per VM and per VCPU, without guest RAM: the drop in the
machine's free memory (/proc/meminfo MemFree) while N VMs, then one VCPU in each, exist.
Run in a quiet lab (`invoke bench`); the Python objects that hold the fds cost well under
1 KiB each and are counted too."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from pyhost import Kvm

from .micro import Figure

COUNT = 32


def mem_free_kib() -> int:
    gc.collect()
    time.sleep(0.2)  # let freed pages settle (per-CPU lists are counted as used)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1])
    raise RuntimeError("no MemFree in /proc/meminfo")


def per_vm_and_vcpu(kvm: Kvm, count: int = COUNT) -> list[Figure]:
    base = mem_free_kib()
    vms = [kvm.create_vm() for _ in range(count)]
    try:
        with_vms = mem_free_kib()
        for vm in vms:
            vm.create_vcpu(0)
        with_vcpus = mem_free_kib()
    finally:
        for vm in vms:
            vm.close()
    return [Figure("kernel memory per VM, no VCPU, no RAM", (base - with_vms) / count, "KiB"),
            Figure("kernel memory per VCPU", (with_vms - with_vcpus) / count, "KiB")]
