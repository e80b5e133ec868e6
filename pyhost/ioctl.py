"""One ioctl call path for every fd type: numbers from the ABI, errors as KvmError.

Two ABIs carry the calls (the transport), chosen per device when it is opened:

- Linux's: the command's number is the ioctl request, CREATE_VM and CREATE_VCPU
  return file descriptors.
- the kext ABI (include/kvmport/kvmport_kext.h), which the macOS port speaks and
  the Linux module serves on /dev/kvmport-kext: every call goes through a
  `struct kvmp_kext_call` envelope (the result comes back in it, errno is for
  errors only), and CREATE_VM / CREATE_VCPU return ids that a fresh open of the
  node attaches.  Here that becomes a descriptor again, so nothing above this
  module knows which ABI it talks to.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .abi import ffi, lib
from .errors import KvmError, PyhostError

ABI_ENV = "PYHOST_ABI"
ABIS = ("linux", "kext")
# the Linux module's node for the kext ABI; on macOS the kext's is /dev/kvmport
KEXT_NODE = "/dev/kvmport-kext"

# kext-ABI handles: descriptor -> the node it is a handle of
_kext_nodes: dict[int, str] = {}
# the commands that make objects, and the ATTACH kind of what they make
_CREATES = {"CREATE_VM": "KVMP_KEXT_ATTACH_VM", "CREATE_VCPU": "KVMP_KEXT_ATTACH_VCPU"}


def device_abi(path: str, abi: str | None = None) -> str:
    """The ABI to speak to the device at `path`: `abi`, else $PYHOST_ABI, else the kext
    ABI on macOS and for a node named kvmport-kext, Linux's otherwise."""
    abi = abi or os.environ.get(ABI_ENV) or (
        "kext" if sys.platform == "darwin" or os.path.basename(path) == "kvmport-kext"
        else "linux")
    if abi not in ABIS:
        raise PyhostError(f"unknown ABI {abi!r} (from --abi or ${ABI_ENV}): "
                          f"use one of {', '.join(ABIS)}")
    return abi


def open_device(path: str, abi: str) -> int:
    """Open a device node for `abi`; OSError as os.open raises it."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    if abi == "kext":
        _kext_nodes[fd] = path
    return fd


def speaks_kext(fd: int) -> bool:
    """Whether fd is a handle of the kext ABI (its VCPUs have no mmap on macOS)."""
    return fd in _kext_nodes


def close_fd(fd: int) -> None:
    """Close a descriptor this module may know as a kext-ABI handle."""
    _kext_nodes.pop(fd, None)
    os.close(fd)


def _linux_call(fd: int, request: int, arg: Any) -> int:
    if isinstance(arg, int):
        return int(lib.kvmp_ioctl_int(fd, request, arg))
    return int(lib.kvmp_ioctl_ptr(fd, request, ffi.cast("void *", arg)))


def _kext_call(fd: int, request: int, arg: Any) -> int:
    call = ffi.new("struct kvmp_kext_call *")
    call.cmd = request
    call.arg = arg & (1 << 64) - 1 if isinstance(arg, int) else int(ffi.cast("uintptr_t", arg))
    ret = lib.kvmp_ioctl_ptr(fd, lib.kvmp_kext_ioc(request), call)
    return int(ret) if ret < 0 else int(call.result)


def _attach(node: str, kind: str, obj_id: int) -> int:
    """A fresh handle of `node` attached to the object `obj_id`: its descriptor."""
    try:
        fd = open_device(node, "kext")
    except OSError as e:
        raise KvmError("open of " + node, e.errno or 0) from e
    attach = ffi.new("struct kvmp_kext_attach *",
                     {"kind": getattr(lib, kind), "flags": 0, "id": obj_id})
    ret = _kext_call(fd, lib.KVMP_KEXT_ATTACH, attach)
    if ret < 0:
        close_fd(fd)
        raise KvmError("KVMP_KEXT_ATTACH", -ret)
    return fd


def kvm_ioctl(fd: int, name: str, arg: Any = 0) -> int:
    """Issue KVM_<name> (numbered by include/) on fd; arg is an int or a cffi pointer."""
    request = getattr(lib, "KVMP_" + name)
    node = _kext_nodes.get(fd)
    ret = _linux_call(fd, request, arg) if node is None else _kext_call(fd, request, arg)
    if ret < 0:
        raise KvmError("KVM_" + name, -ret)
    if node is not None and name in _CREATES:
        return _attach(node, _CREATES[name], ret)
    return ret
