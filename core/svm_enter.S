/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * AMD SVM guest entry and exit.
 *
 * int kvmp_svm_enter(struct svm_enter *e)
 *
 * With GIF clear and the host's interrupts enabled (a host interrupt then
 * becomes an INTR exit): save the host's VMSAVE state, load the guest's
 * general registers (RAX and RSP live in the VMCB) and its VMLOAD state,
 * VMRUN, and undo it all after the #VMEXIT.  struct svm_enter (svm.c) is
 * the 16 registers, then the VMCB's and the host save area's addresses.
 *
 * Returns 0, or 1 if a VMSAVE, VMLOAD or VMRUN faulted (SVM went off on
 * this CPU under us): the exception table skips a faulting instruction and
 * notes it in a stack slot, so the registers go back where they came from
 * as after an exit (no guest instruction ran).
 */
#include "kvmp_asm.inc.S"

#define E_VMCB		128
#define E_HOST_VMCB	136

	.text
	.globl	KVMP_SYM(kvmp_svm_enter)
	KVMP_FUNC_TYPE(KVMP_SYM(kvmp_svm_enter))
KVMP_SYM(kvmp_svm_enter):
	KVMP_PUSH_CALLEE_SAVED
	push	$0			/* 1 once an instruction below faulted */
	push	%rdi			/* e, found again after the exit */
	mov	E_HOST_VMCB(%rdi), %rax
1:	vmsave	%rax			/* the host's FS, GS, TR, ... that VMRUN keeps not */
2:	KVMP_LOAD_GPRS
	mov	E_VMCB(%rdi), %rax
	mov	G_RDI(%rdi), %rdi
3:	vmload	%rax
4:	vmrun	%rax
5:	vmsave	%rax
6:	xchg	%rdi, (%rsp)		/* e; the guest's RDI on the stack */
	KVMP_STORE_GPRS
	pop	%rax
	mov	%rax, G_RDI(%rdi)
	mov	E_HOST_VMCB(%rdi), %rax
7:	vmload	%rax
8:	KVMP_FILL_RSB
	pop	%rax			/* the result: 0, or 1 after a fault */
	KVMP_CLEAR_SCRATCH
	KVMP_POP_CALLEE_SAVED
	KVMP_RET

	/* the fixups: note the fault (no flag changes), go on after the instruction */
11:	movq	$1, 8(%rsp)
	jmp	2b
13:	movq	$1, 8(%rsp)
	jmp	4b
14:	movq	$1, 8(%rsp)
	jmp	5b
15:	movq	$1, 8(%rsp)
	jmp	6b
17:	movq	$1, (%rsp)		/* e is off the stack by now */
	jmp	8b
	KVMP_EXTABLE_S(1b, 11b)
	KVMP_EXTABLE_S(3b, 13b)
	KVMP_EXTABLE_S(4b, 14b)
	KVMP_EXTABLE_S(5b, 15b)
	KVMP_EXTABLE_S(7b, 17b)
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_svm_enter))
