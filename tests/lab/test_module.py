"""kvmport.ko in the lab: load/unload, device node policy, KVM_GET_API_VERSION, clean dmesg."""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

NODE = Path("/dev/kvmport")
SYSMOD = Path("/sys/module/kvmport")
KVM_GET_API_VERSION = 0xAE00  # Linux: _IO(KVMIO=0xAE, 0x00)
KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_IRQCHIP = 0
KVM_UNASSIGNED = 0xAEFE  # _IO(KVMIO, 0xfe): no KVM ioctl has this number
BAD_DMESG = re.compile(
    r"WARNING:|BUG:|Oops|general protection|Call Trace|kernel BUG|UBSAN|KASAN|list_add corruption"
)


def _dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()


def _sh(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def ko() -> Path:
    path = os.environ.get("KVMPORT_KO")
    assert path, "KVMPORT_KO is not set: run through `invoke lab` (it builds lkm/ first)"
    assert Path(path).is_file(), f"{path} missing"
    return Path(path)


@pytest.fixture(scope="module")
def loaded(ko: Path) -> Iterator[list[str]]:
    """Load kvmport.ko for the module's tests; yield the dmesg lines from before loading."""
    if SYSMOD.exists():
        _sh("rmmod", "kvmport")
    before = _dmesg()
    _sh("insmod", str(ko))
    yield before
    if SYSMOD.exists():
        _sh("rmmod", "kvmport")


def _wait_group(path: Path, group: str, seconds: float = 5.0) -> os.stat_result:
    """udev (the lab's stand-in) applies the rule asynchronously: wait like udevadm settle."""
    deadline = time.monotonic() + seconds
    st = path.stat()
    while grp.getgrgid(st.st_gid).gr_name != group and time.monotonic() < deadline:
        time.sleep(0.05)
        st = path.stat()
    return st


def test_module_loaded(loaded: list[str]) -> None:
    assert SYSMOD.is_dir()
    assert (SYSMOD / "initstate").read_text().strip() == "live"


def test_node_mode_and_group(loaded: list[str]) -> None:
    st = _wait_group(NODE, "kvm")
    assert stat.S_ISCHR(st.st_mode), f"{NODE} is not a character device"
    assert stat.S_IMODE(st.st_mode) == 0o660, f"mode {stat.S_IMODE(st.st_mode):04o}"
    assert grp.getgrgid(st.st_gid).gr_name == "kvm"
    assert st.st_uid == 0


def test_api_version(loaded: list[str]) -> None:
    fd = os.open(NODE, os.O_RDWR | os.O_CLOEXEC)
    try:
        assert fcntl.ioctl(fd, KVM_GET_API_VERSION) == 12
    finally:
        os.close(fd)


def test_api_version_matches_linux_kvm(loaded: list[str]) -> None:
    """The reference: Linux's own /dev/kvm in the lab answers the same number."""
    kvm = Path("/dev/kvm")
    assert kvm.exists(), "Linux KVM (kvm_amd/kvm_intel) is not loaded in the lab"
    fds = [os.open(p, os.O_RDWR | os.O_CLOEXEC) for p in (kvm, NODE)]
    try:
        linux, ours = (fcntl.ioctl(fd, KVM_GET_API_VERSION) for fd in fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert ours == linux == 12


def _errno_of(path: Path, request: int, arg: int) -> int | None:
    """errno of ioctl(path, request, arg), None if it succeeded."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
    return None


@pytest.mark.parametrize(
    ("request_", "arg"),
    [
        pytest.param(KVM_GET_API_VERSION, 1, id="get_api_version-nonzero-arg"),
        pytest.param(KVM_UNASSIGNED, 0, id="unassigned-ioctl"),
        pytest.param(0x1234, 0, id="foreign-ioctl"),
    ],
)
def test_errors_match_linux_kvm(loaded: list[str], request_: int, arg: int) -> None:
    """Bad requests fail as on Linux's /dev/kvm (the lab's reference), errno for errno."""
    linux = _errno_of(Path("/dev/kvm"), request_, arg)
    ours = _errno_of(NODE, request_, arg)
    assert linux is not None, "the reference accepted it: the test's premise is wrong"
    assert ours == linux, (
        f"errno {ours and errno.errorcode.get(ours)} from /dev/kvmport, "
        f"{errno.errorcode.get(linux)} from /dev/kvm"
    )


def test_unload_clean(loaded: list[str]) -> None:
    _sh("rmmod", "kvmport")
    assert not SYSMOD.exists()
    assert not NODE.exists(), f"{NODE} still there after rmmod"
    new = _dmesg()[len(loaded) :]
    bad = [ln for ln in new if BAD_DMESG.search(ln)]
    assert not bad, "kernel complained while kvmport was loaded:\n" + "\n".join(bad)
    assert any("kvmport: loaded" in ln for ln in new), "no load message in dmesg"
    assert any("kvmport: unloaded" in ln for ln in new), "no unload message in dmesg"
    assert any("kvmport: no leaks" in ln for ln in new), "the module reported a leak"


def test_reload(ko: Path) -> None:
    """Load/unload twice more: no leaked minor or stale node."""
    for _ in range(2):
        _sh("insmod", str(ko))
        assert NODE.exists()
        _sh("rmmod", "kvmport")
        assert not NODE.exists()
