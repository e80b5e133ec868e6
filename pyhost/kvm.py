"""The system fd: `Kvm` opens the device and answers system ioctls.

Imports go one way, system -> VM -> VCPU (kvm.py -> vm.py -> vcpu.py): a VM is given what
it needs from the system fd (the run area's size), never the `Kvm` itself."""

from __future__ import annotations

import enum
import errno
import os
import sys

from .abi import constants, ffi
from .cpuid import CpuidEntry, cpuid_entries, new_cpuid2
from .errors import KvmError, NoDeviceError, PyhostError
from .ioctl import ABI_ENV, KEXT_NODE, close_fd, device_abi, kvm_ioctl, open_device
from .vm import Vm

DEVICE_ENV = "PYHOST_DEVICE"
DEFAULT_DEVICES = ("/dev/kvmport", "/dev/kvm")
API_VERSION = 12

Cap = enum.IntEnum("Cap", {k[4:]: v for k, v in constants("CAP_").items()})  # type: ignore[misc]
Cap.__doc__ = "KVM_CHECK_EXTENSION capabilities, named as in include/kvmport."


def device_candidates(path: str | None = None, abi: str | None = None) -> list[str]:
    """Where to look for the device: an explicit path, else $PYHOST_DEVICE, else the defaults
    (for the kext ABI on Linux, the module's node for it)."""
    if path:
        return [path]
    env = os.environ.get(DEVICE_ENV)
    if env:
        return [env]
    if (abi or os.environ.get(ABI_ENV)) == "kext" and sys.platform != "darwin":
        return [KEXT_NODE]
    return list(DEFAULT_DEVICES)


def _open_device(paths: list[str], abi: str | None) -> tuple[int, str, str]:
    tried: list[tuple[str, str]] = []
    for p in paths:
        how = device_abi(p, abi)
        try:
            return open_device(p, how), p, how
        except OSError as e:
            tried.append((p, e.strerror or str(e)))
    raise NoDeviceError(tried)


class Kvm:
    """An open KVM-compatible device (Linux's /dev/kvm or kvmport's /dev/kvmport)."""

    def __init__(self, path: str | None = None, abi: str | None = None) -> None:
        """Open `path` (default: see device_candidates) speaking `abi` ("linux" or "kext";
        default: see pyhost.ioctl.device_abi)."""
        self.fd, self.path, self.abi = _open_device(device_candidates(path, abi), abi)
        try:
            version = self.get_api_version()
            if version != API_VERSION:
                raise PyhostError(
                    f"{self.path} speaks KVM API version {version}; pyhost needs {API_VERSION}"
                )
        except BaseException:
            close_fd(self.fd)
            raise
        self._vcpu_mmap_size: int | None = None

    # -- plumbing -------------------------------------------------------
    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            close_fd(self.fd)
            self.fd = -1

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- system ioctls --------------------------------------------------
    def get_api_version(self) -> int:
        return kvm_ioctl(self.fd, "GET_API_VERSION")

    @property
    def api_version(self) -> int:
        return self.get_api_version()

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when unsupported, else a positive (often informative) value."""
        return kvm_ioctl(self.fd, "CHECK_EXTENSION", int(cap))

    def capabilities(self) -> dict[str, int]:
        """Every capability include/ names, with this device's answer."""
        return {c.name: self.check_extension(c) for c in Cap}

    def get_vcpu_mmap_size(self) -> int:
        return kvm_ioctl(self.fd, "GET_VCPU_MMAP_SIZE")

    @property
    def vcpu_mmap_size(self) -> int:
        if self._vcpu_mmap_size is None:
            self._vcpu_mmap_size = self.get_vcpu_mmap_size()
        return self._vcpu_mmap_size

    def get_msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST, sized as Linux does: ask with 0, get E2BIG and the count."""
        probe = ffi.new("struct kvmp_msr_list *")
        try:
            kvm_ioctl(self.fd, "GET_MSR_INDEX_LIST", probe)
            return []
        except KvmError as e:
            if e.errno != errno.E2BIG:
                raise
        n = probe.nmsrs
        lst = ffi.new("struct kvmp_msr_list *", {"nmsrs": n, "indices": n})
        kvm_ioctl(self.fd, "GET_MSR_INDEX_LIST", lst)
        return [lst.indices[i] for i in range(lst.nmsrs)]

    def get_mce_cap_supported(self) -> int:
        """KVM_X86_GET_MCE_CAP_SUPPORTED: the MCG_CAP bits KVM_X86_SETUP_MCE accepts."""
        cap = ffi.new("kvmp_u64 *")
        kvm_ioctl(self.fd, "X86_GET_MCE_CAP_SUPPORTED", cap)
        return int(cap[0])

    def get_supported_cpuid(self, max_entries: int = 64) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer while the device answers E2BIG."""
        while True:
            buf = new_cpuid2(max_entries)
            try:
                kvm_ioctl(self.fd, "GET_SUPPORTED_CPUID", buf)
            except KvmError as e:
                if e.errno != errno.E2BIG or max_entries >= 4096:
                    raise
                max_entries *= 2
                continue
            return cpuid_entries(buf)

    def create_vm(self, machine_type: int = 0) -> Vm:
        run_size = self.vcpu_mmap_size  # asked first: a failure then leaks no VM fd
        return Vm(kvm_ioctl(self.fd, "CREATE_VM", machine_type), run_size)

    def __repr__(self) -> str:
        return f"Kvm({self.path!r}, abi={self.abi!r})"
