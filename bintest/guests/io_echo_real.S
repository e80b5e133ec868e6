/* pyhost-mode: real -- IN a byte from port 0x71, OUT it plus one to port 0x70. */
	.code16
	.globl _start
_start:
	in	$0x71, %al
	inc	%al
	out	%al, $0x70
	hlt
