/*
 * pyhost-mode: real -- dirty logging: the host picks each page and access.
 * IN a word from port 0x71 (a page number; 0xffff halts), IN a byte from
 * port 0x72 (0 reads the page's first byte, 1 writes 0x5a there, 2 fills
 * its first 4 bytes by REP INSB from port 0x73), then OUT it to port 0x70.
 * Nothing else is written: no stack, no interrupts.
 */
	.code16
	.globl _start
_start:
	in	$0x71, %ax
	cmp	$0xffff, %ax
	je	done
	shl	$8, %ax			/* page to segment */
	mov	%ax, %es
	in	$0x72, %al
	cmp	$1, %al
	je	write
	cmp	$2, %al
	je	string_in
	mov	%es:0, %bl		/* a read */
	jmp	next
write:
	movb	$0x5a, %es:0
	jmp	next
string_in:
	xor	%di, %di
	mov	$4, %cx
	mov	$0x73, %dx
	cld
	rep insb
	mov	$2, %al
next:
	out	%al, $0x70
	jmp	_start
done:
	hlt
