"""pyhost.backend: the module behind a KVM device node and whether it emulates, from a
sysfs and /proc laid out as Linux does (a fake tree; /dev/null stands in for the node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyhost.backend import device_backend

NULL = os.stat("/dev/null").st_rdev
NODE = f"{os.major(NULL)}:{os.minor(NULL)}"


def fake_host(tmp: Path, misc_name: str, modules: dict[str, dict[str, str]],
              flags: str = "fpu tsc") -> tuple[Path, Path]:
    sysfs, proc = tmp / "sys", tmp / "proc"
    (sysfs / "devices" / "virtual" / "misc" / misc_name).mkdir(parents=True)
    (sysfs / "dev" / "char").mkdir(parents=True)
    (sysfs / "dev" / "char" / NODE).symlink_to(f"../../devices/virtual/misc/{misc_name}")
    for module, params in modules.items():
        (sysfs / "module" / module / "parameters").mkdir(parents=True)
        for name, value in params.items():
            (sysfs / "module" / module / "parameters" / name).write_text(value + "\n")
    proc.mkdir()
    (proc / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return sysfs, proc


@pytest.mark.parametrize("misc, modules, flags, module, emulated, nested", [
    ("kvm", {"kvm": {}, "kvm_pvm": {"verbose": "0"}}, "fpu tsc", "kvm_pvm", True, False),
    ("kvm", {"kvm": {}, "kvm_pvm": {}}, "fpu hypervisor", "kvm_pvm", True, False),
    ("kvm", {"kvm": {}, "kvm_amd": {}}, "fpu svm hypervisor", "kvm_amd", False, True),
    ("kvm", {"kvm": {}, "kvm_intel": {}}, "fpu vmx", "kvm_intel", False, False),
    ("kvmport", {"kvmport": {"as_kvm": "N"}}, "svm", "kvmport", False, False),
    ("kvm", {"kvmport": {"as_kvm": "Y"}}, "svm", "kvmport", False, False),
    ("kvm", {"kvm": {}}, "fpu", "kvm", None, False),
    ("tty", {}, "fpu", None, None, False),
])
def test_module_and_kind(tmp_path, misc, modules, flags, module, emulated, nested):
    sysfs, proc = fake_host(tmp_path, misc, modules, flags)
    b = device_backend("/dev/null", sysfs, proc)
    assert (b.module, b.emulated, b.nested) == (module, emulated, nested), b
    kind = {True: "emulated", False: "virtualized", None: "unknown"}[emulated]
    assert b.describe().startswith(f"{module or '?'} ({kind}: "), b.describe()


def test_kvmport_names_its_backend_from_the_cpu(tmp_path):
    sysfs, proc = fake_host(tmp_path, "kvmport", {"kvmport": {}}, "fpu svm")
    assert "AMD SVM" in device_backend("/dev/null", sysfs, proc).how


def test_not_a_device(tmp_path):
    assert device_backend(str(tmp_path)).emulated is None
    assert "cannot stat" in device_backend(str(tmp_path / "none")).how


def test_the_device_under_test(device):
    """What `pyhost info` says of each --device: on a PVM host (/sys/module/kvm_pvm, as
    this project's build machine), /dev/kvm is emulated; kvmport and kvm_amd/kvm_intel
    virtualize."""
    b = device_backend(device)
    if os.path.realpath(device).endswith("kvmport"):
        assert (b.module, b.emulated) == ("kvmport", False), b
    elif Path("/sys/module/kvm_pvm").is_dir():
        assert (b.module, b.emulated) == ("kvm_pvm", True), b
    else:
        assert b.module in ("kvm_amd", "kvm_intel", "kvmport") and b.emulated is False, b
