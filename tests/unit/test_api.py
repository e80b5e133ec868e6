"""pyhost's API on a real device: errors, system/VM/VCPU ioctls, guest memory."""

from __future__ import annotations

import errno

import pytest

from pyhost import Cap, GuestMemory, GuestMemoryError, Kvm, KvmError, NoDeviceError
from pyhost.kvm import device_candidates


def test_no_device_error_names_every_path_tried(tmp_path):
    missing = str(tmp_path / "nokvm")
    with pytest.raises(NoDeviceError) as info:
        Kvm(missing)
    msg = str(info.value)
    assert missing in msg and "No such file" in msg and "invoke lab" in msg


def test_device_order(monkeypatch):
    monkeypatch.delenv("PYHOST_DEVICE", raising=False)
    assert device_candidates() == ["/dev/kvmport", "/dev/kvm"]
    monkeypatch.setenv("PYHOST_DEVICE", "/dev/other")
    assert device_candidates() == ["/dev/other"]
    assert device_candidates("/dev/explicit") == ["/dev/explicit"]


def test_system_ioctls(kvm):
    assert kvm.api_version == 12
    assert kvm.vcpu_mmap_size >= 4096 and kvm.vcpu_mmap_size % 4096 == 0
    assert kvm.check_extension(Cap.USER_MEMORY) > 0
    assert kvm.check_extension(Cap.IMMEDIATE_EXIT) > 0
    assert kvm.check_extension(0x7FFFFFF0) == 0  # unknown capability: "no", not an error
    msrs = kvm.get_msr_index_list()
    assert 0xC0000080 in msrs or 0x10 in msrs  # EFER or TSC: every x86 KVM lists one
    leaves = {e.function for e in kvm.get_supported_cpuid()}
    assert 0 in leaves and 1 in leaves and 0x80000000 in leaves


def test_failed_ioctl_names_ioctl_and_errno(kvm):
    vm = kvm.create_vm()
    mem = GuestMemory(0, 0x10000)
    try:
        with pytest.raises(KvmError) as info:
            vm.set_user_memory_region(0, 0x123, 0x1000, mem.host_address)  # unaligned gpa
        assert info.value.errno == errno.EINVAL
        assert str(info.value) == "KVM_SET_USER_MEMORY_REGION failed: EINVAL (Invalid argument)"
    finally:
        vm.close()
        mem.close()


def test_memory_slots_overlap_and_delete(kvm):
    with kvm.create_vm() as vm:
        a = vm.add_memory(0, 0x10000)
        with pytest.raises(KvmError) as info:
            vm.add_memory(0x8000, 0x10000)  # overlaps slot 0
        assert info.value.errno == errno.EEXIST
        vm.remove_memory(a)
        b = vm.add_memory(0x8000, 0x10000)  # the range is free again
        assert b.guest_phys_addr == 0x8000


def test_guest_memory_read_write_by_gpa(kvm):
    with kvm.create_vm() as vm:
        vm.add_memory(0, 0x2000)
        vm.add_memory(0x100000, 0x1000)
        vm.write(0x1FFC, b"abcd")
        vm.write(0x100000, b"\x01\x02")
        assert vm.read(0x1FFC, 4) == b"abcd" and vm.read(0x100000, 2) == b"\x01\x02"
        with pytest.raises(GuestMemoryError):
            vm.read(0x1FFE, 4)  # crosses the end of a slot
        with pytest.raises(GuestMemoryError):
            vm.write(0x50000, b"x")  # no memory there


def test_vcpu_ids_are_unique(kvm):
    with kvm.create_vm() as vm:
        vm.create_vcpu(0)
        with pytest.raises(KvmError) as info:
            vm.create_vcpu(0)
        assert info.value.errno == errno.EEXIST


def test_registers_round_trip(kvm):
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        regs = vcpu.get_regs()
        regs.rax, regs.r15, regs.rip = 0x1122334455667788, 42, 0x1234
        vcpu.set_regs(regs)
        back = vcpu.get_regs()
        assert (back.rax, back.r15, back.rip) == (0x1122334455667788, 42, 0x1234)
        fpu = vcpu.get_fpu()
        fpu.xmm[3][0:4] = [1, 2, 3, 4]
        fpu.mxcsr = 0x1F80
        vcpu.set_fpu(fpu)
        assert list(vcpu.get_fpu().xmm[3][0:4]) == [1, 2, 3, 4]
        assert vcpu.get_mp_state() == 0  # RUNNABLE (the boot processor)


def test_msrs_count_processed(kvm):
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        vcpu.set_cpuid2(kvm.get_supported_cpuid())
        assert vcpu.set_msrs({0xC0000102: 0x1000}) == 1  # KERNEL_GS_BASE
        assert vcpu.get_msrs([0xC0000102]) == {0xC0000102: 0x1000}
        # Linux stops at the first MSR it cannot read and reports how many it did
        assert vcpu.get_msrs([0xC0000102, 0xDEAD0000]) == {0xC0000102: 0x1000}


def test_mmap_vcpu_extension_matches_its_capability(kvm):
    with kvm.create_vm() as vm:
        if kvm.check_extension(Cap.MMAP_VCPU):
            vcpu = vm.create_vcpu(0, run_area="ioctl")
            assert vcpu.kvm_run.exit_reason == 0
        else:  # Linux KVM: the extension ioctl is refused, not misread
            with pytest.raises(KvmError) as info:
                vm.create_vcpu(0, run_area="ioctl")
            assert info.value.ioctl == "KVM_MMAP_VCPU"
            assert info.value.errno in (errno.EINVAL, errno.ENOTTY)
