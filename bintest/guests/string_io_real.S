/*
 * pyhost-mode: real -- string port I/O both ways and both directions:
 * REP INSB of 8 bytes from port 0x71 into `buf`, then REP OUTSW of 3 words
 * from `words` to port 0x3f8 walking downwards (DF=1), then HLT.
 */
	.code16
	.globl _start, buf
_start:
	cld
	mov	$buf, %di
	mov	$8, %cx
	mov	$0x71, %dx
	rep insb
	std
	mov	$words + 4, %si		/* the last word first */
	mov	$3, %cx
	mov	$0x3f8, %dx
	rep outsw
	cld
	hlt
words:	.word	0x1111, 0x2222, 0x3333
buf:	.fill	8, 1, 0
