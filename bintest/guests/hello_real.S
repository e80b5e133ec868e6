/* pyhost-mode: real -- "Hello" on COM1 by port I/O, then HLT. */
	.code16
	.globl _start
_start:
	mov	$msg, %si
	mov	$0x3f8, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	out	%al, %dx
	jmp	1b
2:	hlt
msg:	.asciz	"Hello from real mode\n"
