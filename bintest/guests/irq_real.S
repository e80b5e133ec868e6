/*
 * pyhost-mode: real -- interrupt injection in real mode: an IVT whose vector
 * 0x20 handler counts in BX; HLT until three came, then OUT the count to port
 * 0x10 and stop with interrupts off.
 */
	.code16
	.globl _start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$handler, 0x20 * 4
	movw	$0, 0x20 * 4 + 2
	lidt	ivt
	xor	%bx, %bx
	sti
1:	hlt
	cmp	$3, %bx
	jb	1b
	cli
	mov	%bl, %al
	out	%al, $0x10
	hlt
handler:
	inc	%bx
	iret
ivt:	.word	0x3ff
	.long	0
