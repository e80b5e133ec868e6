/*
 * pyhost-mode: protected -- interrupt injection in protected mode: an IDT with
 * a 32-bit interrupt gate for vector 0x20 whose handler counts in EBX; HLT
 * until three came, then OUT the count to port 0x10 and stop.
 */
	.code32
	.globl _start
_start:
	mov	$handler, %eax
	mov	$idt + 0x20 * 8, %edi
	mov	%ax, (%edi)		/* offset 15:0 */
	movw	$0x08, 2(%edi)		/* flat code selector */
	movw	$0x8e00, 4(%edi)	/* present, DPL 0, 32-bit interrupt gate */
	shr	$16, %eax
	mov	%ax, 6(%edi)		/* offset 31:16 */
	lidt	idtr
	xor	%ebx, %ebx
	sti
1:	hlt
	cmp	$3, %ebx
	jb	1b
	cli
	mov	%bl, %al
	out	%al, $0x10
	hlt
/*
 * The handler returns as IRET would at the same privilege level (restore
 * EFLAGS, then a far return dropping the saved EFLAGS), because the host's
 * emulating /dev/kvm (Linux's instruction emulator) implements IRET only in
 * real mode.  Interrupts come only while the guest halts, so the window
 * between POPF and LRET is harmless.
 */
handler:
	inc	%ebx
	pushl	8(%esp)
	popfl
	lret	$4
	.p2align 3
idtr:	.word	256 * 8 - 1
	.long	idt
	.p2align 3
idt:	.fill	256 * 8, 1, 0
