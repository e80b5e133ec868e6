/*
 * pyhost-mode: real -- VCPU state a VMM saves and restores (KVM_GET/SET_VCPU_EVENTS,
 * KVM_GET/SET_DEBUGREGS): an NMI handler (IVT vector 2) reports from inside, where
 * NMIs are blocked, how many NMIs came (AL) and how deeply it is nested (AH) on port
 * 0x11; the main loop writes DR0, reports the NMI count on port 0x10 until two came,
 * then reads DR0 back and reports it on port 0x12.
 */
	.code16
	.globl _start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$nmi, 2 * 4
	movw	$0, 2 * 4 + 2
	lidt	ivt
	xor	%bx, %bx		/* NMIs taken */
	xor	%cx, %cx		/* handlers running */
	mov	$0x12345678, %eax
	mov	%eax, %dr0
1:	mov	%bl, %al
	out	%al, $0x10
	cmp	$2, %bl
	jb	1b
	mov	%dr0, %eax
	out	%eax, $0x12
	hlt
nmi:
	inc	%bx
	inc	%cx
	mov	%bl, %al
	mov	%cl, %ah
	out	%ax, $0x11
	dec	%cx
	iret
ivt:	.word	0x3ff
	.long	0
