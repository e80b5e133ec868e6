/*
 * pyhost-mode: long -- the task priority (CR8) with the local APIC in the VMM: it reads
 * what the VMM gave (port 0xe0), raises it (the VMM sees it at the OUT to 0xe1), lowers
 * it at `lower` (an exit of its own, KVM_EXIT_SET_TPR, with RIP at `lowered`), reads it
 * again, then writes a reserved value at `fault` (#GP).
 */
	.code64
	.globl _start, lower, lowered, fault
_start:
	mov	%cr8, %rax
	out	%al, $0xe0
	mov	$9, %eax
	mov	%rax, %cr8
	out	%al, $0xe1
	mov	$2, %eax
lower:	mov	%rax, %cr8
lowered:
	mov	%cr8, %rax
	out	%al, $0xe0
	mov	$16, %eax
fault:	mov	%rax, %cr8
	hlt
