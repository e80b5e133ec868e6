"""A VCPU ioctl that waits for the VCPU lock while another thread is in a long KVM_RUN
waits killably, as Linux's KVM does (mutex_lock_killable): the kernel's hung-task
detector, which reports uninterruptible sleepers only, stays quiet about it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pyhost import Intr
from pyhost.exits import Exit

from ..quirks import BOCHS_NEVER_INTERRUPTS_L2

pytestmark = pytest.mark.lab

SYSCTL = Path("/proc/sys/kernel")


@pytest.fixture
def hung_task_watch():
    """The hung-task detector at 1 s, with unlimited reports, for the test's duration."""
    timeout, warnings = SYSCTL / "hung_task_timeout_secs", SYSCTL / "hung_task_warnings"
    assert timeout.exists(), "the lab kernel has no hung-task detector"
    saved = timeout.read_text(), warnings.read_text()
    warnings.write_text("-1")
    timeout.write_text("1")
    yield
    timeout.write_text(saved[0])
    warnings.write_text(saved[1])


@pytest.mark.skipif(BOCHS_NEVER_INTERRUPTS_L2, reason="the kick would wait forever (quirks)")
def test_ioctl_waiting_for_a_running_vcpu_is_not_a_hung_task(raw_guest, hung_task_watch):
    g = raw_guest("spin_real")
    result: list[Exit] = []
    waited: list[int] = []
    # both threads on one CPU: a waiter never finds the lock's owner running elsewhere,
    # so it sleeps instead of spinning (mutexes spin while their owner is on a CPU)
    def run() -> None:
        os.sched_setaffinity(0, {0})
        result.append(g.vcpu.run())

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    time.sleep(0.3)
    assert runner.is_alive(), "the endless loop stopped by itself"

    def wait_for_lock() -> None:
        os.sched_setaffinity(0, {0})
        waited.append(threading.get_native_id())
        g.vcpu.get_regs()  # blocks until KVM_RUN returns

    waiter = threading.Thread(target=wait_for_lock, daemon=True)
    waiter.start()
    time.sleep(4)  # several of the detector's 1 s rounds
    assert waiter.is_alive(), "KVM_GET_REGS did not wait for the running VCPU"
    g.vcpu.kick()
    runner.join(10)
    waiter.join(10)
    assert not runner.is_alive() and not waiter.is_alive()
    assert result == [Intr()]
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert f":{waited[0]} blocked for more than" not in dmesg, (
        "the waiting ioctl slept uninterruptibly (a hung-task report)")
