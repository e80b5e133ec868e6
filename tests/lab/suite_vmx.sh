#!/bin/sh
# The VMX lab suite, run inside `invoke lab --cpu vmx` (Bochs: every step is slow, and
# pytest's start alone takes minutes, so this is one pytest run): the device tests -- the
# API tests, the micro-guests with both run-area paths, the differential test, bootfd.img's
# boots, the VCPU lock, the kext ABI's rules -- on Linux's kvm_intel (the oracle) and on kvmport's VMX
# backend; then kvmport unloads with a clean kernel log and no leak, and the module's own
# load/unload tests.  Not here, for time (each costs minutes under Bochs; the SVM suite
# runs them on both devices): Debian's own kernel (test_boot_debian) and the tests of
# pyhost's machine and CLI (tests/unit/test_hw_machine, test_cli*, test_loader), which
# exercise pyhost, not the device; and test_slot_ipis, which needs two CPUs (Bochs has
# one here).
mark=/tmp/kvmport-dmesg-mark
dmesg | wc -l > "$mark" || exit 1
export KVMPORT_DMESG_MARK="$mark"
insmod "$KVMPORT_KO" || exit 1
exec python3 -m pytest -ra -p no:cacheprovider -m "kvm or lab" tests/unit/test_api.py \
	tests/unit/test_backend.py tests/guests \
	tests/lab/test_differential.py tests/lab/test_boot.py \
	tests/lab/test_vcpu_lock.py tests/lab/test_kext_abi.py tests/lab/test_module_log.py \
	tests/lab/test_module.py \
	--device /dev/kvm --device /dev/kvmport "$@"
