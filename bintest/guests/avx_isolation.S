/*
 * pyhost-mode: long -- AVX state isolation between guest and host.  Turn on
 * OSXSAVE and XCR0 = x87|SSE|AVX, record what CPUID and XGETBV then say, record
 * YMM0-15 as found (the VMM's KVM_SET_FPU state, upper halves in reset state),
 * load the guest's own pattern, exit (OUT to port 0x10), and on return store
 * YMM0-15 again: they must still be the guest's pattern.
 */
	.code64
	.globl _start, seen, after, pattern, cpuid1_ecx, xsave_size, xcr0
_start:
	mov	%cr4, %rax
	or	$0x40600, %rax		/* OSFXSR, OSXMMEXCPT, OSXSAVE */
	mov	%rax, %cr4
	mov	$1, %eax
	xor	%ecx, %ecx
	cpuid
	mov	%ecx, cpuid1_ecx(%rip)
	xor	%ecx, %ecx
	xor	%edx, %edx
	mov	$7, %eax		/* x87, SSE, AVX */
	xsetbv
	mov	$0xd, %eax
	xor	%ecx, %ecx
	cpuid
	mov	%ebx, xsave_size(%rip)
	xor	%ecx, %ecx
	xgetbv
	mov	%eax, xcr0(%rip)
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu	%ymm\r, seen + 32 * \r(%rip)
	.endr
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu	pattern + 32 * \r(%rip), %ymm\r
	.endr
	out	%al, $0x10
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu	%ymm\r, after + 32 * \r(%rip)
	.endr
	hlt

	.p2align 5
pattern:
	.irp	r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	.fill	16, 1, 0x60 + \r
	.fill	16, 1, 0x70 + \r
	.endr
seen:	.fill	512, 1, 0xee
after:	.fill	512, 1, 0xee
cpuid1_ecx: .long 0
xsave_size: .long 0
xcr0:	.long 0
