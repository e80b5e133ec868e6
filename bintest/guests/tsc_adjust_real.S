/* pyhost-mode: real -- IA32_TSC and IA32_TSC_ADJUST written by the guest; OUT to port 0x80
 * after each step (EDX:EAX holds what it read back), HLT with TSC_ADJUST in EDI:ESI and the
 * TSC in EDX:EAX. */
	.code16
	.globl _start
_start:
	/* the TSC := 2000 << 30: TSC_ADJUST grows by what that added */
	movl	$0x10, %ecx
	xorl	%eax, %eax
	movl	$500, %edx
	wrmsr
	movl	$0x3b, %ecx
	rdmsr
	out	%al, $0x80
	/* TSC_ADJUST := 1500 << 30: the TSC grows by what that added */
	movl	$0x3b, %ecx
	xorl	%eax, %eax
	movl	$375, %edx
	wrmsr
	movl	$0x10, %ecx
	rdmsr
	out	%al, $0x80
	/* after the VMM's writes: both read back */
	movl	$0x3b, %ecx
	rdmsr
	movl	%eax, %esi
	movl	%edx, %edi
	movl	$0x10, %ecx
	rdmsr
	hlt
