"""Slot changes interrupt only the CPUs the VM's VCPUs are in guest mode on, as Linux's
remote TLB flush does; before, kvmport interrupted every online CPU for each one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyhost import Kvm
from pyhost.vm import GuestMemory

pytestmark = pytest.mark.lab

ROUNDS = 200


def call_interrupts(cpu: int) -> int:
    """Function-call IPIs CPU `cpu` has taken (the CAL line of /proc/interrupts)."""
    for line in Path("/proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "CAL:":
            return int(fields[1 + cpu])
    raise AssertionError("no CAL line in /proc/interrupts")


def test_slot_changes_do_not_interrupt_other_cpus(kvm: Kvm):
    assert os.cpu_count() and os.cpu_count() >= 2, "the lab has 2 CPUs"
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    mem = GuestMemory(0, 0x10000)
    try:
        with kvm.create_vm() as vm:
            vm.create_vcpu(0)  # a VCPU that is not running
            before = call_interrupts(1)
            for _ in range(ROUNDS):
                vm.set_user_memory_region(1, 0x100000, 0x10000, mem.host_address)
                vm.set_user_memory_region(1, 0x100000, 0, mem.host_address)  # delete
            taken = call_interrupts(1) - before
    finally:
        mem.close()
        os.sched_setaffinity(0, saved)
    assert taken < ROUNDS // 4, f"CPU 1 took {taken} function-call IPIs for {ROUNDS} deletes"
