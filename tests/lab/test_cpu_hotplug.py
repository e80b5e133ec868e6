"""CPU hotplug while VMs live: a CPU that comes back online must have virtualization on
before a VCPU runs there, and one going offline must not be entered (kvmport turned SVM
on only on the CPUs online at the first KVM_CREATE_VM; a CPU onlined later faulted on
VMRUN). Linux KVM (the other device) is the oracle: the same load passes there."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bintest.build import build, mode_of
from pyhost import Hlt, IoOut, Kvm
from pyhost.raw import load_raw

pytestmark = pytest.mark.lab

CPU1 = Path("/sys/devices/system/cpu/cpu1/online")
OUTS = 2000  # port-I/O exits per guest run


def set_online(on: bool) -> None:
    CPU1.write_text("1" if on else "0")
    assert CPU1.read_text().strip() == ("1" if on else "0")


def run_guest(kvm: Kvm) -> int:
    """bench_pio on a fresh VM: OUTS port-I/O exits, then HLT; the exits seen."""
    g = load_raw(kvm, build("bench_pio").read_bytes(), mode_of("bench_pio"))  # type: ignore[arg-type]
    try:
        regs = g.vcpu.get_regs()
        regs.rcx = OUTS
        g.vcpu.set_regs(regs)
        outs = 0
        while isinstance(ex := g.vcpu.run(), IoOut):
            outs += 1
        assert isinstance(ex, Hlt), ex
        return outs
    finally:
        g.close()


def test_vcpus_run_on_a_cpu_that_went_offline_and_came_back(kvm: Kvm):
    assert (os.cpu_count() or 1) >= 2 and CPU1.exists(), "the lab has 2 CPUs"
    saved = os.sched_getaffinity(0)
    holder = kvm.create_vm()  # keeps virtualization on while CPU 1 goes and comes
    errors: list[BaseException] = []
    done = threading.Event()
    runs = [0]

    def vcpu_thread() -> None:
        try:
            while not done.is_set():  # pinned to CPU 1 while it is online
                try:
                    os.sched_setaffinity(0, {1})
                except OSError:
                    os.sched_setaffinity(0, {0})  # CPU 1 is offline just now
                assert run_guest(kvm) == OUTS
                runs[0] += 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=vcpu_thread)
    try:
        t.start()
        for _ in range(3):
            set_online(False)
            set_online(True)
        os.sched_setaffinity(0, {1})  # and a VCPU made and run on CPU 1 itself
        assert run_guest(kvm) == OUTS
    finally:
        done.set()
        t.join(120)
        set_online(True)
        os.sched_setaffinity(0, saved)
        holder.close()
    assert not t.is_alive(), "the VCPU thread hangs"
    assert not errors, errors
    assert runs[0] >= 1
