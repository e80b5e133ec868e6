/* pyhost-mode: real -- benchmark: ECX OUTs to port 0x80 (ECX set by the VMM), then HLT. */
	.code16
	.globl _start
_start:
1:	out	%al, $0x80
	dec	%ecx
	jnz	1b
	hlt
