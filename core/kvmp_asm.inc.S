/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Included by the guest entry files (vmx_enter.S, svm_enter.S): symbol naming
 * per object format, the host's return instruction, and the return stack
 * buffer fill after a VM exit.
 */
#ifndef KVMPORT_CORE_KVMP_ASM_INC_S
#define KVMPORT_CORE_KVMP_ASM_INC_S

#if defined(__KERNEL__) && defined(__linux__)
#include <linux/linkage.h>	/* RET: the return thunk where the host uses one */
#include <linux/objtool.h>
#include <asm/asm.h>
#define KVMP_RET	RET
/* a fault at label from resumes at label to (kvmp_os.h, KVMP_EXTABLE) */
#define KVMP_EXTABLE_S(from, to)	_ASM_EXTABLE(from, to)
#else
#define KVMP_RET	ret
#define KVMP_EXTABLE_S(from, to)	/* XNU: no exception table for kexts */
#endif
#ifndef ANNOTATE_INTRA_FUNCTION_CALL
#define ANNOTATE_INTRA_FUNCTION_CALL
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

/* the guest's general registers in memory: x86 encoding order, 8 bytes each */
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

/* the host's callee-saved registers, around the guest's run */
.macro KVMP_PUSH_CALLEE_SAVED
	push	%rbp
	push	%rbx
	push	%r12
	push	%r13
	push	%r14
	push	%r15
.endm

.macro KVMP_POP_CALLEE_SAVED
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbx
	pop	%rbp
.endm

/*
 * The guest's registers at (%rdi) in and out, all but RAX, RSP and RDI (each
 * entry has its own way with those); no flag changes
 */
.macro KVMP_LOAD_GPRS
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
.endm

.macro KVMP_STORE_GPRS
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
.endm

/* after the exit: no guest value left in a register the caller may use speculatively */
.macro KVMP_CLEAR_SCRATCH
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d
.endm

/*
 * After a VM exit the return stack buffer holds the guest's return
 * addresses, and the host's next RETs would be predicted from them: push
 * 32 harmless ones (each "returns" to an INT3) before the first RET, as
 * Linux's KVM does.  The stack is given back as it goes.  Clobbers RCX.
 */
.macro KVMP_FILL_RSB
	mov	$16, %ecx
771:
	ANNOTATE_INTRA_FUNCTION_CALL
	call	772f
	int3
772:
	ANNOTATE_INTRA_FUNCTION_CALL
	call	773f
	int3
773:
	add	$16, %rsp
	dec	%ecx
	jnz	771b
	lfence			/* no speculation past a mispredicted JNZ */
.endm

#endif /* KVMPORT_CORE_KVMP_ASM_INC_S */
