/*
 * pyhost-mode: long -- a #GP with an error code in 64-bit mode: a load from a
 * non-canonical address, for the VMM's trap IDT.
 */
	.code64
	.globl _start, fault
_start:
	movabs	$0x8000000000000000, %rbx
	mov	$0x5678, %edx
fault:	mov	(%rbx), %rax
