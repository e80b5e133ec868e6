/*
 * pyhost-mode: real -- coalesced MMIO and port I/O: two stores into the
 * window at 0xa0000 and an OUT to port 0x80 (zones the test registers),
 * OUT 0x99 to port 0x70, a store beside the window (0xa1000), then
 * REP STOSW of 300 words into the window (more than the ring holds), HLT.
 */
	.code16
	.globl _start
_start:
	cld
	mov	$0xa000, %ax
	mov	%ax, %es
	movw	$0x1234, %es:0x10
	movb	$0x56, %es:0x20
	mov	$0x77, %al
	out	%al, $0x80
	mov	$0x99, %al
	out	%al, $0x70
	movw	$0xabcd, %es:0x1000
	mov	$0x5a5a, %ax
	xor	%di, %di
	mov	$300, %cx
	rep stosw
	hlt
