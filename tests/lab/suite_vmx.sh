#!/bin/sh
# The VMX lab suite, run inside `invoke lab --cpu vmx` (Bochs: every step is slow).
# kvmport has no VMX backend yet, so on Intel it is checked as a module (load, node,
# unload, dmesg); Linux's kvm_intel runs the micro-guests and boots bootfd.img.
status=0
python3 -m pytest -ra -p no:cacheprovider tests/lab/test_kext.py || status=1
python3 -m pytest -ra -p no:cacheprovider tests/guests \
	"tests/lab/test_boot.py::test_bootfd_self_check_passes" --device /dev/kvm || status=1
exit $status
