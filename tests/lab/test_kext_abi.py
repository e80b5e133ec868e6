"""The kext ABI (include/kvmport/kvmport_kext.h) as the Linux module serves it on
/dev/kvmport-kext: the same server (core/kvmp_kext.c) the macOS port runs.

The device-parametrised suite runs through it too (tests/lab/suite.sh passes
--device /dev/kvmport-kext: pyhost speaks the kext ABI to a node of that name); these
tests check what only this ABI has: the call envelope, ids and ATTACH, handle lifetimes,
several VMs and VCPUs in one process.  Linux KVM has no such ABI, so there is no oracle
to compare with; the expected answers are the header's.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterator
from typing import Any

import pytest

from bintest.build import build, mode_of
from pyhost import Hlt, IoOut, Kvm
from pyhost.abi import ffi, lib
from pyhost.raw import load_raw

pytestmark = pytest.mark.lab

NODE = "/dev/kvmport-kext"
MAX_PENDING = 64  # core/kvmp_kext.c: unattached objects one handle may hold


def call(fd: int, cmd: int, arg: Any = 0, *, number: int | None = None,
         flags: int = 0) -> int:
    """One kext-ABI call: the result, or -errno."""
    c = ffi.new("struct kvmp_kext_call *")
    c.cmd, c.flags = cmd, flags
    c.arg = arg if isinstance(arg, int) else int(ffi.cast("uintptr_t", arg))
    ret = lib.kvmp_ioctl_ptr(fd, lib.kvmp_kext_ioc(cmd) if number is None else number, c)
    return int(ret) if ret < 0 else int(c.result)


def attach(fd: int, kind: int, obj_id: int, flags: int = 0) -> int:
    a = ffi.new("struct kvmp_kext_attach *", {"kind": kind, "flags": flags, "id": obj_id})
    return call(fd, lib.KVMP_KEXT_ATTACH, a)


class Handles:
    """Opens of the node, all closed at the end."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def open(self) -> int:
        fd = os.open(NODE, os.O_RDWR | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def close(self, fd: int) -> None:
        self.fds.remove(fd)
        os.close(fd)


@pytest.fixture
def handles() -> Iterator[Handles]:
    assert os.path.exists(NODE), f"{NODE} missing: load kvmport.ko (it always makes the node)"
    h = Handles()
    yield h
    for fd in h.fds:
        os.close(fd)


def new_vm(h: Handles) -> tuple[int, int]:
    """A VM made on a system handle and attached to a fresh one: (system fd, VM fd)."""
    sys_fd = h.open()
    vm_id = call(sys_fd, lib.KVMP_CREATE_VM, 0)
    assert vm_id > 0
    vm_fd = h.open()
    assert attach(vm_fd, lib.KVMP_KEXT_ATTACH_VM, vm_id) == 0
    return sys_fd, vm_fd


def test_results_come_back_in_the_envelope_and_errno_is_for_errors(handles):
    fd = handles.open()
    assert call(fd, lib.KVMP_GET_API_VERSION) == 12
    # a capability's value is a result, never an errno (kvm-kext's mistake)
    assert call(fd, lib.KVMP_CHECK_EXTENSION, lib.KVMP_CAP_NR_MEMSLOTS) > 7
    assert call(fd, lib.KVMP_CHECK_EXTENSION, lib.KVMP_CAP_MMAP_VCPU) == 1
    # errors are the Linux ABI's, errno for errno: an unknown system ioctl
    bogus = lib.KVMP_GET_API_VERSION | 0xFE
    linux = os.open("/dev/kvmport", os.O_RDWR)
    try:
        assert call(fd, bogus) == lib.kvmp_ioctl_int(linux, bogus, 0) < 0
    finally:
        os.close(linux)


def test_the_envelope_is_checked(handles):
    fd = handles.open()
    c = ffi.new("struct kvmp_kext_call *", {"cmd": lib.KVMP_GET_API_VERSION})
    # Linux's number (not IOC_VOID), or a number that is not the envelope's command
    assert lib.kvmp_ioctl_ptr(fd, lib.KVMP_GET_API_VERSION, c) == -errno.ENOTTY
    assert call(fd, lib.KVMP_GET_API_VERSION,
                number=lib.kvmp_kext_ioc(lib.KVMP_CHECK_EXTENSION)) == -errno.ENOTTY
    assert call(fd, lib.KVMP_GET_API_VERSION, flags=1) == -errno.EINVAL
    # the envelope itself unreadable
    assert lib.kvmp_ioctl_int(fd, lib.kvmp_kext_ioc(lib.KVMP_GET_API_VERSION), 8) == \
        -errno.EFAULT
    # and its result unwritable: a read-only page
    ro = mmap.mmap(-1, mmap.PAGESIZE)
    page = ffi.from_buffer(ro)
    env = ffi.cast("struct kvmp_kext_call *", page)
    env.cmd, env.flags = lib.KVMP_GET_API_VERSION, 0
    addr = int(ffi.cast("uintptr_t", page))
    os_mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ)
    try:
        assert lib.kvmp_ioctl_ptr(fd, lib.kvmp_kext_ioc(lib.KVMP_GET_API_VERSION), env) == \
            -errno.EFAULT
    finally:
        os_mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE)
        ffi.release(page)
        ro.close()


def os_mprotect(addr: int, size: int, prot: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(size), prot):
        raise OSError(ctypes.get_errno(), "mprotect")


def test_attach_rules(handles):
    sys_fd = handles.open()
    vm_id = call(sys_fd, lib.KVMP_CREATE_VM, 0)
    other_id = call(sys_fd, lib.KVMP_CREATE_VM, 0)
    assert vm_id > 0 and other_id > 0 and vm_id != other_id
    fresh = handles.open()
    assert attach(fresh, 3, vm_id) == -errno.EINVAL               # no such kind
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VM, vm_id, flags=1) == -errno.EINVAL
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VCPU, vm_id) == -errno.ENOENT  # wrong kind
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VM, 0) == -errno.ENOENT
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VM, vm_id + 1000) == -errno.ENOENT
    # failures leave the handle fresh; success makes it the VM's, once
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VM, vm_id) == 0
    assert attach(fresh, lib.KVMP_KEXT_ATTACH_VM, other_id) == -errno.EBUSY
    assert attach(handles.open(), lib.KVMP_KEXT_ATTACH_VM, vm_id) == -errno.ENOENT  # taken
    # a handle that made a call is a system handle for good
    assert attach(sys_fd, lib.KVMP_KEXT_ATTACH_VM, other_id) == -errno.EBUSY
    # the VM handle answers VM ioctls, not system ones
    assert call(fresh, lib.KVMP_CHECK_EXTENSION, lib.KVMP_CAP_USER_MEMORY) == 1
    assert call(fresh, lib.KVMP_GET_API_VERSION) == -errno.ENOTTY
    vcpu_id = call(fresh, lib.KVMP_CREATE_VCPU, 0)
    assert vcpu_id > 0
    vcpu = handles.open()
    assert attach(vcpu, lib.KVMP_KEXT_ATTACH_VM, vcpu_id) == -errno.ENOENT
    assert attach(vcpu, lib.KVMP_KEXT_ATTACH_VCPU, vcpu_id) == 0
    regs = ffi.new("struct kvmp_regs *")
    assert call(vcpu, lib.KVMP_GET_REGS, regs) == 0
    assert regs.rip == 0xFFF0  # reset state, as KVM_GET_REGS on a Linux VCPU fd
    assert call(fresh, lib.KVMP_CREATE_VCPU, 0) == -errno.EEXIST  # Linux's answer


def test_what_nobody_attached_ends_with_its_maker(handles):
    maker = handles.open()
    vm_id = call(maker, lib.KVMP_CREATE_VM, 0)
    handles.close(maker)
    assert attach(handles.open(), lib.KVMP_KEXT_ATTACH_VM, vm_id) == -errno.ENOENT
    # a VCPU parked on a VM handle ends with that handle; the VM goes on
    _, vm_fd = new_vm(handles)
    vcpu_id = call(vm_fd, lib.KVMP_CREATE_VCPU, 0)
    spare = handles.open()
    assert call(spare, lib.KVMP_KEXT_ATTACH, 0) == -errno.EFAULT  # nothing taken
    handles.close(vm_fd)
    assert attach(spare, lib.KVMP_KEXT_ATTACH_VCPU, vcpu_id) == -errno.ENOENT


def test_a_handle_may_hold_only_so_many_unattached_objects(handles):
    fd = handles.open()
    ids = [call(fd, lib.KVMP_CREATE_VM, 0) for _ in range(MAX_PENDING)]
    assert all(i > 0 for i in ids) and len(set(ids)) == MAX_PENDING
    assert call(fd, lib.KVMP_CREATE_VM, 0) == -errno.EMFILE
    assert attach(handles.open(), lib.KVMP_KEXT_ATTACH_VM, ids[0]) == 0
    assert call(fd, lib.KVMP_CREATE_VM, 0) > 0  # room again


def test_another_process_can_neither_attach_nor_use_them(handles):
    sys_fd, vm_fd = new_vm(handles)
    parked = call(sys_fd, lib.KVMP_CREATE_VM, 0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it got, as errno numbers
        try:
            got = [-call(vm_fd, lib.KVMP_CHECK_EXTENSION, lib.KVMP_CAP_USER_MEMORY),
                   -attach(os.open(NODE, os.O_RDWR), lib.KVMP_KEXT_ATTACH_VM, parked),
                   call(sys_fd, lib.KVMP_GET_API_VERSION)]
            os.write(w, repr(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    # EIO as Linux answers a VM fd used by another process; the system handle serves all
    assert got == repr([errno.EIO, errno.ENOENT, 12])
    assert attach(handles.open(), lib.KVMP_KEXT_ATTACH_VM, parked) == 0


def test_only_a_vcpu_handle_maps_and_kvm_mmap_vcpu_maps_the_run_area(handles):
    _, vm_fd = new_vm(handles)
    with pytest.raises(OSError) as e:
        mmap.mmap(vm_fd, mmap.PAGESIZE)
    assert e.value.errno == errno.ENODEV
    vcpu = handles.open()
    assert attach(vcpu, lib.KVMP_KEXT_ATTACH_VCPU, call(vm_fd, lib.KVMP_CREATE_VCPU, 0)) == 0
    req = ffi.new("struct kvmp_mmap_vcpu *")
    assert call(vcpu, lib.KVMP_MMAP_VCPU, req) == 0
    assert req.addr and req.size == call(handles.open(), lib.KVMP_GET_VCPU_MMAP_SIZE)
    run = ffi.cast("struct kvmp_run *", req.addr)
    assert run.exit_reason == 0
    lib.munmap(ffi.cast("void *", req.addr), req.size)


def test_several_vms_and_vcpus_in_one_process_run_through_the_kext_abi():
    image = build("hello_real").read_bytes()
    with Kvm(NODE) as kvm:
        assert kvm.abi == "kext"
        guests = [load_raw(kvm, image, mode_of("hello_real"), vcpus=2) for _ in range(3)]
        try:
            fds = {g.vm.fd for g in guests} | {v.fd for g in guests for v in g.vcpus}
            assert len(fds) == 9
            for g in guests:
                for v in g.vcpus:
                    assert v.run_area == "ioctl"  # KVMP_MMAP_VCPU: macOS has no device mmap
                    text = bytearray()
                    while isinstance(ex := v.run(), IoOut):
                        text += ex.data
                    assert isinstance(ex, Hlt)
                    assert bytes(text) == b"Hello from real mode\n"
        finally:
            for g in guests:
                g.close()
