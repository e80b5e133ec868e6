"""VM ioctls Linux's selftests and VMMs call: KVM_ENABLE_CAP on the VM fd
(KVM_CAP_MAX_VCPU_ID) and KVM_SET/GET_NR_MMU_PAGES, with Linux's answers and errnos, on every
--device (Linux 6.1's x86.c, kvm_main.c)."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from pyhost import Cap, KvmError
from pyhost.abi import ffi, lib
from pyhost.ioctl import kvm_ioctl

from ..quirks import HOST_PVM_NO_NR_MMU_PAGES

CAP_MAX_VCPU_ID = lib.KVMP_CAP_MAX_VCPU_ID
CAP_ENABLE_CAP_VM = lib.KVMP_CAP_ENABLE_CAP_VM
CAP_HALT_POLL = 102  # a capability Linux enables and kvmport does not offer
MIN_MMU_PAGES = 64  # Linux's KVM_MIN_ALLOC_MMU_PAGES
MMU_PAGES_RATIO = 50  # Linux's KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO


def enable_cap(fd: int, cap: int, arg0: int = 0, flags: int = 0) -> int:
    c = ffi.new("struct kvmp_enable_cap *", {"cap": cap, "flags": flags, "args": [arg0]})
    return kvm_ioctl(fd, "ENABLE_CAP", c)


def check(fd: int, cap: int) -> int:
    return kvm_ioctl(fd, "CHECK_EXTENSION", cap)


def errno_of(call: Callable[[], object]) -> int | None:
    with pytest.raises(KvmError) as e:
        call()
    return e.value.errno


def test_max_vcpu_id_is_set_once_and_bounds_vcpu_ids(kvm):
    with kvm.create_vm() as vm:
        assert check(vm.fd, CAP_ENABLE_CAP_VM) == 1
        limit = check(vm.fd, CAP_MAX_VCPU_ID)
        assert limit > 2
        assert errno_of(lambda: enable_cap(vm.fd, CAP_MAX_VCPU_ID, limit + 1)) == errno.EINVAL
        assert errno_of(lambda: enable_cap(vm.fd, CAP_MAX_VCPU_ID, 2, flags=1)) == errno.EINVAL
        assert enable_cap(vm.fd, CAP_MAX_VCPU_ID, 2) == 0
        assert enable_cap(vm.fd, CAP_MAX_VCPU_ID, 2) == 0  # the same again: taken
        assert errno_of(lambda: enable_cap(vm.fd, CAP_MAX_VCPU_ID, 3)) == errno.EINVAL
        assert errno_of(lambda: kvm_ioctl(vm.fd, "CREATE_VCPU", 2)) == errno.EINVAL
        vm.create_vcpu(1)


def test_the_first_vcpu_fixes_the_max_vcpu_id(kvm):
    with kvm.create_vm() as vm:
        limit = check(vm.fd, CAP_MAX_VCPU_ID)
        vm.create_vcpu(0)
        assert errno_of(lambda: enable_cap(vm.fd, CAP_MAX_VCPU_ID, 2)) == errno.EINVAL
        assert enable_cap(vm.fd, CAP_MAX_VCPU_ID, limit) == 0


def test_enable_cap_of_a_capability_kvmport_lacks(kvm, device):
    with kvm.create_vm() as vm:
        assert errno_of(lambda: enable_cap(vm.fd, 0xFFFF)) == errno.EINVAL  # none: both
        assert errno_of(lambda: enable_cap(vm.fd, Cap.IMMEDIATE_EXIT)) == errno.EINVAL
        if check(vm.fd, CAP_HALT_POLL):  # Linux: halt polling is the VM's to tune
            assert enable_cap(vm.fd, CAP_HALT_POLL, 1000) == 0
        else:
            assert errno_of(lambda: enable_cap(vm.fd, CAP_HALT_POLL, 1000)) == errno.EINVAL


pvm_no_nr_mmu_pages = pytest.mark.xfail(
    HOST_PVM_NO_NR_MMU_PAGES, strict=True, raises=KvmError,
    reason="kvm_pvm has no KVM_SET/GET_NR_MMU_PAGES")


@pvm_no_nr_mmu_pages
def test_nr_mmu_pages(kvm):
    with kvm.create_vm() as vm:
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == 0  # nothing computed before a slot
        vm.add_memory(0, 64 << 20)  # 16384 pages
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == (64 << 20 >> 12) // MMU_PAGES_RATIO
        vm.add_memory(0x10000000, 1 << 20)
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == (65 << 20 >> 12) // MMU_PAGES_RATIO
        assert errno_of(lambda: kvm_ioctl(vm.fd, "SET_NR_MMU_PAGES", MIN_MMU_PAGES - 1)) == \
            errno.EINVAL
        assert kvm_ioctl(vm.fd, "SET_NR_MMU_PAGES", MIN_MMU_PAGES) == 0
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == MIN_MMU_PAGES
        vm.add_memory(0x20000000, 64 << 20)  # the VMM's number stays
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == MIN_MMU_PAGES


@pvm_no_nr_mmu_pages
def test_nr_mmu_pages_has_a_floor(kvm):
    with kvm.create_vm() as vm:
        vm.add_memory(0, 1 << 20)  # 256 pages: 5, raised to 64
        assert kvm_ioctl(vm.fd, "GET_NR_MMU_PAGES") == MIN_MMU_PAGES
