/*
 * pyhost-mode: long -- benchmark: a compute loop of ECX iterations (set by the
 * VMM) with no exits, then HLT; it measures how fast guest code runs.
 */
	.code64
	.globl _start
_start:
	xor	%eax, %eax
1:	add	%rcx, %rax
	imul	$3, %rax, %rax
	dec	%ecx
	jnz	1b
	hlt
