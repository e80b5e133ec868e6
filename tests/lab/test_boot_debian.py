"""Debian's own x86_64 kernel (the lab kernel's vmlinuz: generic, relocatable, 64-bit
entry) booted by `pyhost boot --kernel --initrd` with bootfd.img's small initramfs, to
the init's self-check and power-off, on each --device.

    invoke lab --cpu svm -- python3 -m pytest -q -p no:cacheprovider \
        tests/lab/test_boot_debian.py --device /dev/kvm
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from pyhost.boot.fat import FatImage

from ..quirks import LAB
from .test_boot import BANNER, IMAGE, Boot

pytestmark = pytest.mark.lab

TIMEOUT = 1200  # a generic kernel probes much more than bootfd's: minutes under nested TCG
# Quiet and without the probing this PC cannot answer: every console byte and every
# port access is an exit to Python.
APPEND = ("console=ttyS0 quiet loglevel=3 nolapic noapic acpi=off pci=off nosmp "
          "mitigations=off tsc=reliable reboot=t panic=-1 initcall_blacklist=floppy_init")


@pytest.fixture
def debian_kernel(tmp_path: Path) -> tuple[Path, Path]:
    if LAB != "svm":
        pytest.skip("Debian's kernel is booted in the SVM lab (it would take hours in Bochs)")
    vmlinuz = Path(os.environ.get("KVMPORT_LAB_VMLINUZ", ""))
    assert vmlinuz.is_file(), f"the lab kernel's vmlinuz is missing: {vmlinuz}"
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(FatImage.from_disk(IMAGE.read_bytes()).read_file("/initrd.gz"))
    return vmlinuz, initrd


def test_debian_kernel_boots_to_the_initramfs_self_check(device, debian_kernel):
    vmlinuz, initrd = debian_kernel
    boot = Boot(device, argv=[sys.executable, "-m", "pyhost", "boot", "--kernel", str(vmlinuz),
                              "--initrd", str(initrd), "-m", "256M", "--append", APPEND,
                              "--device", device, "-v"])
    status, out, err = boot.self_check(TIMEOUT)
    print(f"{device}: Debian {vmlinuz.name}: banner after {boot.seen.get(BANNER, -1):.1f} s, "
          f"total {time.monotonic() - boot.started:.1f} s\n{err}")
    assert "64-bit entry at" in err, err  # entered in long mode, as the header allows
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert "console input: 'hello-serial'" in out, out
    assert status == 0, err
    assert "Traceback" not in err
