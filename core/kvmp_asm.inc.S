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
#define KVMP_RET	RET
#else
#define KVMP_RET	ret
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
