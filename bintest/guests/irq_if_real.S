/*
 * pyhost-mode: real -- an interrupt must never arrive while IF is clear.  The
 * main loop alternates stretches with interrupts off (CLI ... STI) and on,
 * ROUNDS times; the host keeps a vector 0x20 interrupt pending all along.  The
 * handler looks at the FLAGS the CPU pushed: with IF clear it reports the
 * interrupted IP on port 0x11.  Every 64 rounds an OUT to port 0x12 gives the
 * host an exit; at the end the handler's count (BX) goes to port 0x10.
 */
	.code16
	.set	ROUNDS, 2048
	.globl _start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$handler, 0x20 * 4
	movw	$0, 0x20 * 4 + 2
	lidt	ivt
	xor	%bx, %bx
	mov	$ROUNDS, %di
round:
	cli
	.globl masked
masked:
	mov	$40, %cx
1:	loop	1b
	.globl masked_end
masked_end:
	sti
	mov	$40, %cx
2:	loop	2b
	test	$0x3f, %di
	jnz	3f
	out	%al, $0x12
3:	dec	%di
	jnz	round
	cli
	mov	%bx, %ax
	out	%ax, $0x10
	hlt

handler:
	push	%bp
	mov	%sp, %bp
	testw	$0x200, 6(%bp)	/* BP, IP, CS, FLAGS on the stack */
	jnz	4f
	mov	2(%bp), %ax
	out	%ax, $0x11
4:	inc	%bx
	pop	%bp
	iret
ivt:	.word	0x3ff
	.long	0
