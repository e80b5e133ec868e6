"""Known faults of the devices and emulators the tests run on, each with its evidence.

A test marks a quirk with a strict xfail only where it is known to happen, so the mark
fails the run as soon as the fault is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

LAB = os.environ.get("KVMPORT_LAB", "")  # "svm" or "vmx" inside `invoke lab`
_qemu = os.environ.get("KVMPORT_LAB_QEMU", "0.0")
LAB_QEMU = tuple(int(x) for x in _qemu.split(".")[:2] if x.isdigit())

# The host machine's /dev/kvm is kvm_pvm, which emulates guest code: it implements
# IRET only in real mode, does not hand KVM_SET_FPU state to the guest, and a guest
# lowering CR8 does not exit with KVM_EXIT_SET_TPR (it goes on to the next OUT; seen
# 2026-12-01 with bintest/guests/cr8_long.S).
HOST_PVM = Path("/sys/module/kvm_pvm").exists()
# kvm_pvm also ignores the VMM's KVM_SET_MSRS of IA32_TSC (it returns 1, the TSC reads on
# as before: tests/guests/test_tsc.py, 2026-12-01).
HOST_PVM_IGNORES_TSC_WRITE = HOST_PVM
# ... and has no KVM_SET/GET_NR_MMU_PAGES (ENOTTY: tests/guests/test_vm_caps.py, 2026-12-01).
HOST_PVM_NO_NR_MMU_PAGES = HOST_PVM

# QEMU's emulated SVM checks the XSETBV intercept only since 8.2 (commit "target/i386:
# check intercept for XSETBV", Oct 2023).  Before that a nested guest's XSETBV writes
# XCR0 directly: Linux's kvm_amd then puts its own idea of the guest's XCR0 back at
# the next entry (the guest's AVX faults with #UD), and no hypervisor can refuse a value.
QEMU_IGNORES_XSETBV_INTERCEPT = LAB == "svm" and LAB_QEMU < (8, 2)

# Linux KVM's KVM_SET_FPU writes only the legacy FXSAVE area of the guest's XSAVE
# buffer and leaves XSTATE_BV alone, so on an XSAVE CPU a fresh VCPU XRSTORs its x87/SSE
# reset state over what KVM_SET_FPU set (seen with kvm_amd 6.1 in the SVM lab; the
# maintainers call the ioctl obsolete).  kvmport marks those components present.
LINUX_SET_FPU_LOST_ON_XSAVE = LAB == "svm"

# Bochs 2.7 (the VMX lab) does not interrupt an L2 guest that never exits: a loop of 40M
# instructions in L2 ran with 0 external-interrupt exits (kvm's debugfs irq_exits) while
# L1's clock advanced 0.05 s (diag of 2026-11-23). An endless L2 loop is therefore never
# kicked there, and a test that needs that would hang, not fail.
BOCHS_NEVER_INTERRUPTS_L2 = LAB == "vmx"

# kvm_amd's KVM_GET_SREGS reports TR as busy whatever the VMCB holds; QEMU writes that
# back when it restores a VCPU (savevm, loadvm, `info registers` + `cont`), and QEMU 7.2
# TCG, which runs the SVM lab, then dies in its nested VMRUN's later task switch with
# `qemu: fatal: invalid tss type` (TR type 11 in ring 3), taking the whole lab machine with
# it (lab/probes/qemu_savevm.py, 2026-12-01, `savevm` and `sync` modes alike). No oracle run
# of QEMU's savevm is possible in this lab; kvmport reports TR as stored and runs it.
LAB_DIES_ON_KVM_AMD_TR_ROUND_TRIP = LAB == "svm"
