#!/bin/sh
# The VMX lab suite, run inside `invoke lab --cpu vmx` (Bochs: every step is slow, and
# pytest's start alone takes minutes, so this is one pytest run): the micro-guests on
# Linux's kvm_intel (the oracle) and on kvmport's VMX backend, both run-area paths, the
# differential test and bootfd.img's boot on both; then kvmport unloads with a clean
# kernel log and no leak, and the module's own load/unload tests.
mark=/tmp/kvmport-dmesg-mark
dmesg | wc -l > "$mark" || exit 1
export KVMPORT_DMESG_MARK="$mark"
insmod "$KVMPORT_KO" || exit 1
exec python3 -m pytest -ra -p no:cacheprovider tests/guests tests/lab/test_differential.py \
	"tests/lab/test_boot.py::test_bootfd_self_check_passes" \
	tests/lab/test_module_log.py tests/lab/test_kext.py \
	--device /dev/kvm --device /dev/kvmport "$@"
