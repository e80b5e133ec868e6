/*
 * pyhost-mode: long -- FPU/SSE isolation between guest and host.  Record what
 * XMM0-15 hold on entry (what the VMM set with KVM_SET_FPU), load the guest's
 * own pattern, exit to the VMM (OUT to port 0x10), and on return store
 * XMM0-15 again: they must still be the guest's pattern.  Only MOVDQU, so an
 * emulating KVM can run it too.
 */
	.code64
	.globl _start, seen, after, pattern
_start:
	mov	%cr4, %rax
	or	$0x600, %rax		/* OSFXSR, OSXMMEXCPT: SSE on */
	mov	%rax, %cr4
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu	%xmm\r, seen + 16 * \r(%rip)
	.endr
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu	pattern + 16 * \r(%rip), %xmm\r
	.endr
	out	%al, $0x10
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu	%xmm\r, after + 16 * \r(%rip)
	.endr
	hlt

	.p2align 4
pattern:
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	.fill	16, 1, 0x60 + \r
	.endr
seen:	.fill	256, 1, 0
after:	.fill	256, 1, 0
