/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Intel VMX guest entry and exit.
 *
 * int kvmp_vmx_enter(u64 *gprs, unsigned long launched)
 *
 * gprs[] holds the guest's general registers in the x86 encoding order
 * (RSP lives in the VMCS).  Interrupts are off and the VCPU's VMCS is
 * current.  Returns 0 after a VM exit, 1 if VMLAUNCH/VMRESUME failed (the
 * caller reads the VM-instruction error), 2 if the VMWRITE, VMLAUNCH or
 * VMRESUME faulted (VMX went off on this CPU under us; the exception table
 * sends the fault to the fixups at the end).  The host's callee-saved
 * registers are saved here; VM exit restores RSP (HOST_RSP, written here)
 * and RIP (HOST_RIP = kvmp_vmx_exit_point), nothing else.
 */
#include "kvmp_asm.inc.S"

#define VMCS_HOST_RSP	0x6c14

	.text
	.globl	KVMP_SYM(kvmp_vmx_enter)
	KVMP_FUNC_TYPE(KVMP_SYM(kvmp_vmx_enter))
KVMP_SYM(kvmp_vmx_enter):
	KVMP_PUSH_CALLEE_SAVED
	push	%rdi			/* gprs, found again at the exit */
	mov	$VMCS_HOST_RSP, %eax
1:	vmwrite	%rsp, %rax
	jbe	.Lfail
	cmp	$0, %rsi		/* flags survive the MOVs below */
	mov	G_RAX(%rdi), %rax
	KVMP_LOAD_GPRS
	mov	G_RDI(%rdi), %rdi
	jne	3f
2:	vmlaunch
	jmp	.Lexit
3:	vmresume
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
	KVMP_STORE_GPRS
	pop	%rax
	mov	%rax, G_RDI(%rdi)
	setbe	%al			/* 1: the entry failed */
	movzbl	%al, %eax
	KVMP_FILL_RSB
	KVMP_CLEAR_SCRATCH
	jmp	.Lout
.Lfail:					/* no HOST_RSP: nothing was entered */
	pop	%rdi
	mov	$1, %eax
.Lout:
	KVMP_POP_CALLEE_SAVED
	KVMP_RET

	/* the fixups: nothing was entered; no guest value stays in a register */
11:	pop	%rdi
	mov	$2, %eax
	jmp	.Lout
12:	add	$8, %rsp		/* gprs */
	mov	$2, %eax
	KVMP_CLEAR_SCRATCH		/* the callee-saved ones come back from the stack */
	jmp	.Lout
	KVMP_EXTABLE_S(1b, 11b)
	KVMP_EXTABLE_S(2b, 12b)
	KVMP_EXTABLE_S(3b, 12b)
	KVMP_FUNC_SIZE(KVMP_SYM(kvmp_vmx_enter))
