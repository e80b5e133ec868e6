"""kvmport.ko as_kvm=1: it registers /dev/kvm (minor 232) so unmodified KVM tools use it,
and it refuses to while Linux's KVM holds that minor."""

from __future__ import annotations

import contextlib
import grp
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bintest.build import build
from pyhost import Cap, Hlt, IoOut, Kvm
from pyhost.raw import load_raw

from .test_boot import BANNER, IMAGE, Boot
from .test_qemu import HALTED, LIGHT, run_to

pytestmark = pytest.mark.lab


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


def linux_kvm_modules() -> list[str]:
    mods = os.environ.get("LAB_KVM_MODULES", "").split()
    assert mods, "LAB_KVM_MODULES is not set: run through `invoke lab`"
    return mods


def module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


@pytest.fixture
def ko() -> str:
    path = os.environ.get("KVMPORT_KO")
    assert path and Path(path).is_file(), "KVMPORT_KO is not set: run through `invoke lab`"
    assert not Path("/sys/module/kvmport").exists(), "kvmport is already loaded"
    return path


def test_refused_while_linux_kvm_is_loaded(ko):
    assert Path("/sys/module/kvm").exists(), "Linux KVM should be loaded in the lab"
    res = sh("insmod", ko, "as_kvm=1")
    assert res.returncode != 0, "as_kvm=1 loaded although /dev/kvm is Linux's"
    assert not Path("/sys/module/kvmport").exists()
    dmesg = sh("dmesg").stdout
    assert "cannot register /dev/kvm" in dmesg and "is Linux's kvm module loaded?" in dmesg


@contextlib.contextmanager
def kvmport_as_kvm(ko: str) -> Iterator[None]:
    """Linux's KVM out, kvmport in as /dev/kvm; afterwards the other way round."""
    mods = linux_kvm_modules()
    for m in reversed(mods):  # dependents first
        assert sh("rmmod", module_name(m)).returncode == 0
    try:
        res = sh("insmod", ko, "as_kvm=1")
        assert res.returncode == 0, res.stderr
        try:
            assert not Path("/sys/module/kvm").exists()
            yield
        finally:
            assert sh("rmmod", "kvmport").returncode == 0
    finally:
        for m in mods:
            sh("insmod", m)
    assert Path("/sys/module/kvm").exists() and Path("/dev/kvm").exists()


def test_stands_in_for_linux_kvm(ko):
    with kvmport_as_kvm(ko):
        # lkm/99-kvmport.rules covers the name: root:kvm 0660, as Debian's /dev/kvm
        node_policy = (grp.getgrnam("kvm").gr_gid, 0o660)
        for _ in range(50):  # the udev stand-in applies it a moment after the node appears
            st = os.stat("/dev/kvm")
            if (st.st_gid, stat.S_IMODE(st.st_mode)) == node_policy:
                break
            time.sleep(0.1)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == node_policy
        with Kvm("/dev/kvm") as kvm:
            assert kvm.api_version == 12
            if os.environ.get("KVMPORT_LAB") == "svm":  # a backend: run a guest
                assert kvm.check_extension(Cap.MMAP_VCPU) == 1  # it is kvmport
                with load_raw(kvm, build("hello_real").read_bytes(), "real") as g:
                    out = b""
                    while isinstance(ex := g.vcpu.run(), IoOut):
                        out += ex.data
                    assert isinstance(ex, Hlt) and out == b"Hello from real mode\n"


DEBIAN_QEMU = "/usr/bin/qemu-system-x86_64"


def test_debian_qemu_runs_bootfd_on_kvmport_as_kvm(ko):
    """Debian's own QEMU, unmodified, with `-accel kvm` (so /dev/kvm) on kvmport: the light
    machine boots bintest/bootfd.img through SeaBIOS to the self-check."""
    if os.environ.get("KVMPORT_LAB") != "svm":
        pytest.skip("QEMU on a KVM device runs in the SVM lab")
    assert os.access(DEBIAN_QEMU, os.X_OK), f"{DEBIAN_QEMU} is missing (qemu-system-x86)"
    with kvmport_as_kvm(ko):
        boot = Boot("/dev/kvm", argv=[DEBIAN_QEMU, "-accel", "kvm", *LIGHT, "-m", "128",
                                      "-snapshot", "-fda", str(IMAGE)])
        out, err = run_to(boot, HALTED, 120)
        print(f"banner after {boot.seen[BANNER]:.1f} s, halted after {boot.seen[HALTED]:.1f} s"
              f"\n{err}")
        assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
        assert "console input: 'hello-serial'" in out, out
        assert "kvmport" in Path("/proc/modules").read_text()  # it ran on kvmport
