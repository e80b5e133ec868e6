/*
 * pyhost-mode: real -- for several VCPUs in one VM: OUT the VMM-given AL (the
 * VCPU's id) to port 0x10 fifty times, then HLT.
 */
	.code16
	.globl _start
_start:
	mov	$50, %cx
1:	out	%al, $0x10
	loop	1b
	hlt
