/* pyhost-mode: protected -- the vmachmon demo 1: recursive factorial of 10 in EAX, then HLT. */
	.code32
	.globl _start
_start:
	mov	$10, %eax
	call	fact
	hlt
/* fact(n in EAX) -> n! in EAX; clobbers ECX, EDX */
fact:
	cmp	$1, %eax
	jbe	1f
	push	%eax
	dec	%eax
	call	fact
	pop	%ecx
	mul	%ecx
	ret
1:	mov	$1, %eax
	ret
