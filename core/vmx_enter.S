/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Intel VMX guest entry and exit.
 *
 * int kvmp_vmx_enter(u64 *gprs, unsigned long launched)
 *
 * gprs[] holds the guest's general registers in the x86 encoding order
 * (RSP lives in the VMCS).  Interrupts are off and the VCPU's VMCS is
 * current.  Returns 0 after a VM exit, 1 if VMLAUNCH/VMRESUME failed (the
 * caller reads the VM-instruction error).  The host's callee-saved
 * registers are saved here; VM exit restores RSP (HOST_RSP, written here)
 * and RIP (HOST_RIP = kvmp_vmx_exit_point), nothing else.
 */
#include "kvmp_asm.inc.S"

#define VMCS_HOST_RSP	0x6c14

	.text
	.globl	KVMP_SYM(kvmp_vmx_enter)
	KVMP_FUNC_TYPE(KVMP_SYM(kvmp_vmx_enter))
KVMP_SYM(kvmp_vmx_enter):
	push	%rbp
	push	%rbx
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	push	%rdi			/* gprs, found again at the exit */
	mov	$VMCS_HOST_RSP, %eax
	vmwrite	%rsp, %rax
	jbe	.Lfail
	cmp	$0, %rsi		/* flags survive the MOVs below */
	mov	G_RAX(%rdi), %rax
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
	mov	G_RDI(%rdi), %rdi
	jne	1f
	vmlaunch
	jmp	.Lexit
1:	vmresume
	/*
	 * A failed VMLAUNCH/VMRESUME goes on here with CF or ZF set; a VM exit
	 * arrives with RFLAGS 0x2 (HOST_RIP).  Up to the SETBE nothing below
	 * touches the flags, and the registers hold the guest's values either way.
	 */
	.globl	KVMP_SYM(kvmp_vmx_exit_point)
KVMP_SYM(kvmp_vmx_exit_point):
.Lexit:
	xchg	%rdi, (%rsp)		/* gprs; the guest's RDI on the stack */
	mov	%rax, G_RAX(%rdi)
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
	setbe	%al			/* 1: the entry failed */
	movzbl	%al, %eax
	KVMP_FILL_RSB
	/* leave no guest value in a register the caller may use speculatively */
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d
	jmp	.Lout
.Lfail:					/* no HOST_RSP: nothing was entered */
	pop	%rdi
	mov	$1, %eax
.Lout:
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbx
	pop	%rbp
	KVMP_RET
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_vmx_enter))
