/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * AMD SVM guest entry and exit.
 *
 * void kvmp_svm_enter(struct svm_enter *e)
 *
 * With GIF clear and the host's interrupts enabled (a host interrupt then
 * becomes an INTR exit): save the host's VMSAVE state, load the guest's
 * general registers (RAX and RSP live in the VMCB) and its VMLOAD state,
 * VMRUN, and undo it all after the #VMEXIT.  struct svm_enter (svm.c) is
 * the 16 registers, then the VMCB's and the host save area's addresses.
 */
#include "kvmp_asm.inc.S"

#define E_VMCB		128
#define E_HOST_VMCB	136

	.text
	.globl	KVMP_SYM(kvmp_svm_enter)
	KVMP_FUNC_TYPE(KVMP_SYM(kvmp_svm_enter))
KVMP_SYM(kvmp_svm_enter):
	KVMP_PUSH_CALLEE_SAVED
	push	%rdi			/* e, found again after the exit */
	mov	E_HOST_VMCB(%rdi), %rax
	vmsave	%rax			/* the host's FS, GS, TR, ... that VMRUN keeps not */
	KVMP_LOAD_GPRS
	mov	E_VMCB(%rdi), %rax
	mov	G_RDI(%rdi), %rdi
	vmload	%rax
	vmrun	%rax
	vmsave	%rax
	xchg	%rdi, (%rsp)		/* e; the guest's RDI on the stack */
	KVMP_STORE_GPRS
	pop	%rax
	mov	%rax, G_RDI(%rdi)
	mov	E_HOST_VMCB(%rdi), %rax
	vmload	%rax
	KVMP_FILL_RSB
	xor	%eax, %eax
	KVMP_CLEAR_SCRATCH
	KVMP_POP_CALLEE_SAVED
	KVMP_RET
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_svm_enter))
