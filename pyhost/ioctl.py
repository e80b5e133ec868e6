"""One ioctl call path for every fd type: numbers from the ABI, errors as KvmError."""

from __future__ import annotations

from typing import Any

from .abi import ffi, lib
from .errors import KvmError


def kvm_ioctl(fd: int, name: str, arg: Any = 0) -> int:
    """Issue KVM_<name> (numbered by include/) on fd; arg is an int or a cffi pointer."""
    request = getattr(lib, "KVMP_" + name)
    if isinstance(arg, int):
        ret = lib.kvmp_ioctl_int(fd, request, arg)
    else:
        ret = lib.kvmp_ioctl_ptr(fd, request, ffi.cast("void *", arg))
    if ret < 0:
        raise KvmError("KVM_" + name, -ret)
    return int(ret)
