/*
 * pyhost-mode: real -- MOVS, STOS and LODS on MMIO (no slot from 0x90000
 * up).  Each step ends with an OUT of its number to port 0x70:
 * 1 REP STOSW to MMIO, 2 REP MOVSB from RAM to MMIO, 3 REP MOVSW from MMIO
 * to RAM, 4 REP FS MOVSB from MMIO to MMIO walking down (DF=1), 5 LODSL
 * from MMIO.  Then HLT.
 */
	.code16
	.globl _start
_start:
	cld
	xor	%ax, %ax
	mov	%ax, %ds
	mov	$0xa000, %ax
	mov	%ax, %es
	mov	$0x1234, %ax
	mov	$0x10, %di
	mov	$3, %cx
	rep stosw
	mov	$1, %al
	out	%al, $0x70

	mov	$src, %si
	mov	$0x20, %di
	mov	$4, %cx
	rep movsb
	mov	$2, %al
	out	%al, $0x70

	mov	$0xa000, %ax
	mov	%ax, %ds
	xor	%ax, %ax
	mov	%ax, %es
	mov	$0x30, %si
	mov	$dst, %di
	mov	$2, %cx
	rep movsw
	mov	$3, %al
	out	%al, $0x70

	mov	$0xb000, %ax
	mov	%ax, %es
	mov	$0xa000, %ax
	mov	%ax, %fs
	xor	%ax, %ax
	mov	%ax, %ds
	std
	mov	$0x40, %si
	mov	$0x50, %di
	mov	$2, %cx
	rep movsb %fs:(%si), %es:(%di)
	cld
	mov	$4, %al
	out	%al, $0x70

	mov	$0xa000, %ax
	mov	%ax, %ds
	mov	$0x60, %si
	lodsl
	mov	$5, %al
	out	%al, $0x70
	hlt

src:	.byte	1, 2, 3, 4
dst:	.word	0, 0
