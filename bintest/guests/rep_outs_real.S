/* pyhost-mode: real -- a string OUT: REP OUTSB of a message to COM1, then HLT. */
	.code16
	.globl _start
_start:
	cld
	mov	$msg, %si
	mov	$(end - msg), %cx
	mov	$0x3f8, %dx
	rep outsb
	hlt
msg:	.ascii	"rep outsb\n"
end:
