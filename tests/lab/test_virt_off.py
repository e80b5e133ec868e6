"""SVM turned off on a CPU under kvmport, as an emergency restart, kexec or crash path or
another module does it: EFER.SVME cleared on CPU 1 through the msr driver while a VM
exists. The next entry on CPU 1 faults on CLGI; the exception table (core/kvmp_os.h,
KVMP_EXTABLE) sends the fault to kvmport's fixup, which logs it, and KVM_RUN fails with
EIO: no oops. With SVME back the same VCPU goes on where it was.

kvmport only: Linux's kvm_amd BUGs on such a fault outside a reboot (kvm_spurious_fault),
on purpose (docs/driver.md, "Security"). tests/kext/test_extable.py checks that every
SVM and VMX instruction of the module has its entry.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
from pathlib import Path

import pytest

from bintest.build import build, mode_of
from pyhost import Hlt, IoOut, Kvm, KvmError
from pyhost.raw import load_raw
from tests.lab.test_module import BAD_DMESG

pytestmark = pytest.mark.lab

MSR_EFER, EFER_SVME = 0xC0000080, 1 << 12
MSR_DEV = Path("/dev/cpu/1/msr")
OUTS = 3


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_svm_turned_off_under_a_vcpu_fails_kvm_run_with_eio_not_an_oops():
    if not Path("/sys/module/kvmport").exists():
        pytest.fail("kvmport is not loaded (insmod $KVMPORT_KO)")
    subprocess.run(["modprobe", "msr"], check=True)
    assert MSR_DEV.exists(), "the lab has 2 CPUs and the msr driver"
    saved = os.sched_getaffinity(0)
    before = len(dmesg())
    fd = os.open(MSR_DEV, os.O_RDWR)
    kvm = Kvm("/dev/kvmport")
    g = load_raw(kvm, build("bench_pio").read_bytes(), mode_of("bench_pio"))  # type: ignore[arg-type]
    try:
        os.sched_setaffinity(0, {1})
        regs = g.vcpu.get_regs()
        regs.rcx = OUTS
        g.vcpu.set_regs(regs)
        assert isinstance(g.vcpu.run(), IoOut)
        (efer,) = struct.unpack("<Q", os.pread(fd, 8, MSR_EFER))
        assert efer & EFER_SVME, "kvmport turned SVM on for its VM"
        os.pwrite(fd, struct.pack("<Q", efer & ~EFER_SVME), MSR_EFER)
        try:
            for _ in range(2):  # the same answer each time
                with pytest.raises(KvmError) as info:
                    g.vcpu.run()
                assert info.value.errno == errno.EIO, info.value
        finally:
            os.pwrite(fd, struct.pack("<Q", efer), MSR_EFER)
        outs = 1
        while isinstance(ex := g.vcpu.run(), IoOut):
            outs += 1
        assert isinstance(ex, Hlt) and outs == OUTS, (ex, outs)
    finally:
        os.sched_setaffinity(0, saved)
        g.close()
        kvm.close()
        os.close(fd)
    new = dmesg()[before:]
    assert any("kvmport: CLGI faulted" in ln for ln in new), new
    bad = [ln for ln in new if BAD_DMESG.search(ln)]
    assert not bad, "the kernel complained:\n" + "\n".join(bad)
