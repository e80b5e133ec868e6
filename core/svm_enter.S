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
	push	%rbp
	push	%rbx
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	push	%rdi			/* e, found again after the exit */
	mov	E_HOST_VMCB(%rdi), %rax
	vmsave	%rax			/* the host's FS, GS, TR, ... that VMRUN keeps not */
	mov	G_RCX(%rdi), %rcx
	mov	G_RDX(%rdi), %rdx
	mov	G_RBX(%rdi), %rbx
	mov	G_RBP(%rdi), %rbp
	mov	G_RSI(%rdi), %rsi
	mov	G_R8(%rdi), %r8
	mov	G_R9(%rdi), %r9
	mov	G_R10(%rdi), %r10
	mov	G_R11(%rdi), %r11
	mov	G_R12(%rdi), %r12
	mov	G_R13(%rdi), %r13
	mov	G_R14(%rdi), %r14
	mov	G_R15(%rdi), %r15
	mov	E_VMCB(%rdi), %rax
	mov	G_RDI(%rdi), %rdi
	vmload	%rax
	vmrun	%rax
	vmsave	%rax
	xchg	%rdi, (%rsp)		/* e; the guest's RDI on the stack */
	mov	%rcx, G_RCX(%rdi)
	mov	%rdx, G_RDX(%rdi)
	mov	%rbx, G_RBX(%rdi)
	mov	%rbp, G_RBP(%rdi)
	mov	%rsi, G_RSI(%rdi)
	mov	%r8, G_R8(%rdi)
	mov	%r9, G_R9(%rdi)
	mov	%r10, G_R10(%rdi)
	mov	%r11, G_R11(%rdi)
	mov	%r12, G_R12(%rdi)
	mov	%r13, G_R13(%rdi)
	mov	%r14, G_R14(%rdi)
	mov	%r15, G_R15(%rdi)
	pop	%rax
	mov	%rax, G_RDI(%rdi)
	mov	E_HOST_VMCB(%rdi), %rax
	vmload	%rax
	KVMP_FILL_RSB
	/* leave no guest value in a register the caller may use speculatively */
	xor	%eax, %eax
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbx
	pop	%rbp
	KVMP_RET
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_svm_enter))
