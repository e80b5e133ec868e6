"""What is behind a KVM device node, as far as sysfs tells: which kernel module answers it
and whether it virtualizes (VMX/SVM run guest code on the CPU) or emulates (PVM on a host
without VMX/SVM: guest code runs orders of magnitude slower).

    device_backend("/dev/kvm").describe()  # "kvm_pvm (emulated: PVM, no VMX/SVM ...)"
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Linux KVM's vendor modules: (how it runs guest code, emulated?)
KVM_VENDORS = {
    "kvm_intel": ("Intel VT-x", False),
    "kvm_amd": ("AMD SVM", False),
    "kvm_pvm": ("PVM, no VMX/SVM on this host: guest code runs far slower", True),
}


@dataclass(frozen=True)
class Backend:
    module: str | None  # the kernel module behind the device, if known
    how: str  # how it runs guest code, or why that is unknown
    emulated: bool | None  # None: cannot tell
    nested: bool = False  # this host is itself a guest: "hardware" is a hypervisor's

    def describe(self) -> str:
        kind = {True: "emulated", False: "virtualized", None: "unknown"}[self.emulated]
        nested = "; this host is itself a virtual machine (nested)" if self.nested else ""
        return f"{self.module or '?'} ({kind}: {self.how}{nested})"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cpu_flags(proc: Path) -> set[str]:
    for line in _read(proc / "cpuinfo").splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def device_backend(path: str, sysfs: Path = Path("/sys"),
                   proc: Path = Path("/proc")) -> Backend:
    """The module behind the character device at `path` (sysfs's name for its major:minor,
    then the loaded modules), and how it runs guest code."""
    try:
        st = os.stat(path)
    except OSError as e:
        return Backend(None, f"cannot stat {path}: {e.strerror}", None)
    if not stat.S_ISCHR(st.st_mode):
        return Backend(None, f"{path} is not a character device", None)
    node = sysfs / "dev" / "char" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name = os.path.basename(os.path.realpath(node)) if node.exists() else ""
    flags = _cpu_flags(proc)
    nested = "hypervisor" in flags
    as_kvm = _read(sysfs / "module" / "kvmport" / "parameters" / "as_kvm") in ("Y", "1")
    if name == "kvmport" or (name == "kvm" and as_kvm):
        ext = "AMD SVM" if "svm" in flags else "Intel VT-x" if "vmx" in flags else "VMX/SVM"
        return Backend("kvmport", f"kvmport's {ext} backend", False, nested)
    if name == "kvm":
        for module, (how, emulated) in KVM_VENDORS.items():
            if (sysfs / "module" / module).is_dir():
                return Backend(module, how, emulated, nested and not emulated)
        return Backend("kvm", "no vendor module (kvm_intel, kvm_amd, kvm_pvm) found", None)
    return Backend(None, f"sysfs does not name the device ({node})", None)
