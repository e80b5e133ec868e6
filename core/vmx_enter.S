/* SPDX-License-Identifier: GPL-2.0 */
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
#if defined(__KERNEL__) && defined(__linux__)
#include <linux/linkage.h>	/* RET: the return thunk where the host uses one */
#define KVMP_RET	RET
#else
#define KVMP_RET	ret
#endif

/* Mach-O (XNU) names C symbols with a leading underscore and has no .type/.size */
#ifdef __APPLE__
#define KVMP_SYM(name)		_##name
#define KVMP_FUNC_TYPE(name)
#define KVMP_FUNC_SIZE(name)
#else
#define KVMP_SYM(name)		name
#define KVMP_FUNC_TYPE(name)	.type name, @function
#define KVMP_FUNC_SIZE(name)	.size name, . - name
#endif

#define G_RAX	0
#define G_RCX	8
#define G_RDX	16
#define G_RBX	24
#define G_RBP	40
#define G_RSI	48
#define G_RDI	56
#define G_R8	64
#define G_R9	72
#define G_R10	80
#define G_R11	88
#define G_R12	96
#define G_R13	104
#define G_R14	112
#define G_R15	120
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
	jmp	.Lfail
1:	vmresume
.Lfail:
	pop	%rdi
	mov	$1, %eax
	jmp	.Lout

	.globl	KVMP_SYM(kvmp_vmx_exit_point)
KVMP_SYM(kvmp_vmx_exit_point):
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
	/* leave no guest value in a register the caller may use speculatively */
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d
	xor	%eax, %eax
.Lout:
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbx
	pop	%rbp
	KVMP_RET
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_vmx_enter))
