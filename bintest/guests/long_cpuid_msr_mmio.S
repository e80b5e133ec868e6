/*
 * pyhost-mode: long -- in 64-bit mode with identity paging:
 *  CPUID leaf 0x40000000 -> R8D/R9D/R10D = EBX/ECX/EDX of what the VMM set;
 *  WRMSR then RDMSR of KERNEL_GS_BASE (a canonical value) -> R11;
 *  an MMIO store of 0xdeadbeef to 0x30000000 and an MMIO load from
 *  0x30000008 -> R12D (no slot backs that address); then HLT.
 */
	.code64
	.globl _start
_start:
	mov	$0x40000000, %eax
	xor	%ecx, %ecx
	cpuid
	mov	%ebx, %r8d
	mov	%ecx, %r9d
	mov	%edx, %r10d

	mov	$0xc0000102, %ecx
	mov	$0x11223344, %eax
	mov	$0x00007788, %edx
	wrmsr
	xor	%eax, %eax
	xor	%edx, %edx
	rdmsr
	shl	$32, %rdx
	or	%rax, %rdx
	mov	%rdx, %r11

	movl	$0xdeadbeef, 0x30000000
	mov	0x30000008, %eax
	mov	%eax, %r12d
	hlt
