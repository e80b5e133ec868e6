"""pyhost's API on a real device: errors, system/VM/VCPU ioctls, guest memory."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pyhost import Cap, GuestMemory, GuestMemoryError, Kvm, KvmError, NoDeviceError
from pyhost.abi import ffi, lib
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


# -- the VCPU state savevm/loadvm and migration need -----------------------------------
def errno_of(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KvmError) as info:
        fn()
    return info.value.errno


def host_has_xsave() -> bool:
    """XSAVE on this machine's CPU (the VMX lab's Bochs CPU shows none to Linux)."""
    flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("flags"))
    return "xsave" in flags.split(":")[1].split()


def test_vcpu_state_capabilities(kvm):
    for cap in (Cap.VCPU_EVENTS, Cap.DEBUGREGS, Cap.XSAVE):
        assert kvm.check_extension(cap) == 1, cap
    # XCRS: only with XSAVE on the host, as Linux
    assert kvm.check_extension(Cap.XCRS) == int(host_has_xsave())


def test_vcpu_events_checks_and_round_trip(kvm):
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        ev = vcpu.get_vcpu_events()
        valid = lib.KVMP_VCPUEVENT_VALID_NMI_PENDING | lib.KVMP_VCPUEVENT_VALID_SHADOW
        assert ev.flags & valid == valid
        assert not ev.flags & ~(valid | lib.KVMP_VCPUEVENT_VALID_SMM)
        assert (ev.exception.injected, ev.interrupt.injected, ev.nmi.pending) == (0, 0, 0)

        def refused(**change: int) -> int:
            e = ffi.new("struct kvmp_vcpu_events *")
            for path, value in change.items():
                obj: object = e
                *parts, last = path.split("__")
                for part in parts:
                    obj = getattr(obj, part)
                setattr(obj, last, value)
            return errno_of(lambda: vcpu.set_vcpu_events(e))

        assert refused(flags=0x40) == errno.EINVAL  # a flag Linux does not know
        assert refused(flags=lib.KVMP_VCPUEVENT_VALID_PAYLOAD) == errno.EINVAL  # no payload cap
        assert refused(exception__injected=1, exception__nr=32) == errno.EINVAL
        assert refused(exception__injected=1, exception__nr=2) == errno.EINVAL  # that is an NMI

        # an injected exception, an interrupt, a pending NMI, NMI blocking, a shadow
        ev = ffi.new("struct kvmp_vcpu_events *")
        ev.exception.injected, ev.exception.nr = 1, 14
        ev.exception.has_error_code, ev.exception.error_code = 1, 0x2
        ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.shadow = 1, 0x31, 1
        ev.nmi.pending, ev.nmi.masked = 1, 1
        ev.flags = lib.KVMP_VCPUEVENT_VALID_NMI_PENDING | lib.KVMP_VCPUEVENT_VALID_SHADOW
        vcpu.set_vcpu_events(ev)
        back = vcpu.get_vcpu_events()
        assert (back.exception.injected, back.exception.nr, back.exception.has_error_code,
                back.exception.error_code) == (1, 14, 1, 0x2)
        assert (back.interrupt.injected, back.interrupt.nr) == (1, 0x31)
        assert back.interrupt.shadow != 0  # SVM has one shadow bit and reports both kinds
        assert (back.nmi.injected, back.nmi.pending, back.nmi.masked) == (0, 1, 1)
        # all clear again; the last exception's vector stays visible, as in Linux
        vcpu.set_vcpu_events(ffi.new("struct kvmp_vcpu_events *", {"flags": ev.flags}))
        back = vcpu.get_vcpu_events()
        assert (back.exception.injected, back.interrupt.injected, back.interrupt.shadow,
                back.nmi.pending, back.nmi.masked) == (0, 0, 0, 0, 0)
        # a triple fault flag without its capability: refused after the rest was taken
        ev.flags |= lib.KVMP_VCPUEVENT_VALID_TRIPLE_FAULT
        assert errno_of(lambda: vcpu.set_vcpu_events(ev)) == errno.EINVAL
        assert vcpu.get_vcpu_events().exception.injected == 1
        # KVM_INTERRUPT and KVM_NMI show up as an injected interrupt and a pending NMI
        vcpu.set_vcpu_events(ffi.new("struct kvmp_vcpu_events *", {"flags": valid}))
        vcpu.interrupt(0x40)
        vcpu.nmi()
        back = vcpu.get_vcpu_events()
        assert (back.interrupt.injected, back.interrupt.nr, back.nmi.pending) == (1, 0x40, 1)


def test_debugregs_checks_and_round_trip(kvm):
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        d = vcpu.get_debugregs()
        assert (list(d.db), d.dr6, d.dr7, d.flags) == ([0] * 4, 0xFFFF0FF0, 0x400, 0)
        d.db = [0x1000, 0x2000, 0x3000, 0xFFFF800000004000]
        d.dr6, d.dr7 = 0xFFFF4FF1, 0x40F
        vcpu.set_debugregs(d)
        back = vcpu.get_debugregs()
        assert (list(back.db), back.dr6, back.dr7) == (
            [0x1000, 0x2000, 0x3000, 0xFFFF800000004000], 0xFFFF4FF1, 0x40F)
        for field, value in (("flags", 1), ("dr6", 1 << 32), ("dr7", 1 << 32)):
            bad = ffi.new("struct kvmp_debugregs *")
            setattr(bad, field, value)
            assert errno_of(lambda bad=bad: vcpu.set_debugregs(bad)) == errno.EINVAL, field
        assert vcpu.get_debugregs().dr7 == 0x40F  # nothing taken


def xsave_words(x) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """FCW, MXCSR and XSTATE_BV of a struct kvmp_xsave."""
    b = bytes(ffi.buffer(x))
    return (int.from_bytes(b[0:2], "little"), int.from_bytes(b[24:28], "little"),
            int.from_bytes(b[512:520], "little"))


def test_xsave_and_xcrs_checks_and_round_trip(kvm):
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        xcrs = vcpu.get_xcrs()
        if not host_has_xsave():  # no XCR to show, none to set (Linux: EINVAL)
            assert xcrs.nr_xcrs == 0
            xs = ffi.new("struct kvmp_xcrs *", {"nr_xcrs": 1})
            xs.xcrs[0].value = 1
            assert errno_of(lambda: vcpu.set_xcrs(xs)) == errno.EINVAL
            return
        assert (xcrs.nr_xcrs, xcrs.flags, xcrs.xcrs[0].xcr, xcrs.xcrs[0].value) == (1, 0, 0, 1)
        x = vcpu.get_xsave()
        fcw, mxcsr, _ = xsave_words(x)
        assert (fcw, mxcsr) == (0x37F, 0x1F80)  # the reset state, whatever XSTATE_BV says

        def set_xcr0(value: int, nr: int = 1, flags: int = 0) -> None:
            xs = ffi.new("struct kvmp_xcrs *", {"nr_xcrs": nr, "flags": flags})
            xs.xcrs[0].xcr, xs.xcrs[0].value = 0, value
            vcpu.set_xcrs(xs)

        assert errno_of(lambda: set_xcr0(3)) == errno.EINVAL  # no CPUID: x87 only
        assert errno_of(lambda: set_xcr0(1, nr=17)) == errno.EINVAL
        assert errno_of(lambda: set_xcr0(1, flags=1)) == errno.EINVAL
        assert errno_of(lambda: set_xcr0(0)) == errno.EINVAL  # x87 is always on
        vcpu.set_cpuid2(kvm.get_supported_cpuid())
        set_xcr0(3)
        assert vcpu.get_xcrs().xcrs[0].value == 3
        assert errno_of(lambda: set_xcr0(5)) == errno.EINVAL  # AVX without SSE

        # x87 and SSE state in, the same out
        new = ffi.new("struct kvmp_xsave *")
        raw = bytearray(4096)
        raw[0:2] = (0x27F).to_bytes(2, "little")
        raw[24:28] = (0x1FA0).to_bytes(4, "little")
        raw[160:176] = bytes(range(16))  # XMM0
        raw[512:520] = (3).to_bytes(8, "little")
        ffi.memmove(new, bytes(raw), 4096)
        vcpu.set_xsave(new)
        back = bytes(ffi.buffer(vcpu.get_xsave()))
        assert xsave_words(vcpu.get_xsave()) == (0x27F, 0x1FA0, 3)
        assert back[160:176] == bytes(range(16))

        def refused(offset: int, value: int, size: int = 8) -> int:
            bad = bytearray(raw)
            bad[offset:offset + size] = value.to_bytes(size, "little")
            x = ffi.new("struct kvmp_xsave *")
            ffi.memmove(x, bytes(bad), 4096)
            return errno_of(lambda: vcpu.set_xsave(x))

        assert refused(512, 3 | 1 << 8) == errno.EINVAL  # a supervisor component
        assert refused(512, 3 | 1 << 62) == errno.EINVAL
        assert refused(520, 1 << 63) == errno.EINVAL  # compacted format
        assert refused(24, 1 << 31, 4) == errno.EINVAL  # a reserved MXCSR bit
        assert xsave_words(vcpu.get_xsave()) == (0x27F, 0x1FA0, 3)  # nothing taken
