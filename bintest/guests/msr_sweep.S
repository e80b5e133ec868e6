/*
 * pyhost-mode: long -- RDMSR of every MSR in 0-0x1fff, 0xc0000000-0xc0001fff
 * and 0xc0010000-0xc0011fff, with its own #GP handler.  For the n-th MSR
 * swept, the byte at STATUS + n is 1 (read; the value is the quadword at
 * VALUES + 8 * n) or 2 (#GP).  Then HLT at `done`.
 */
	.set	STATUS, 0x100000
	.set	VALUES, 0x108000
	.set	GP_GATE, 0x5000 + 13 * 16	/* the VMM's long-mode IDT */

	.code64
	.globl _start, done, rd
_start:
	/* point the #GP gate at gp; selector and type stay the VMM's */
	mov	$gp, %rax
	mov	$GP_GATE, %rdi
	mov	%ax, (%rdi)
	shr	$16, %rax
	mov	%ax, 6(%rdi)
	shr	$16, %rax
	mov	%eax, 8(%rdi)

	mov	%rsp, %r10		/* the handler returns to this stack */
	mov	$STATUS, %r13
	mov	$VALUES, %r12
	mov	$ranges, %r15
	mov	$3, %r14
next_range:
	mov	(%r15), %ebx		/* first MSR */
	mov	4(%r15), %ebp		/* how many */
next_msr:
	mov	%ebx, %ecx
rd:	rdmsr
	movb	$1, (%r13)
	mov	%eax, (%r12)
	mov	%edx, 4(%r12)
	jmp	advance
faulted:
	movb	$2, (%r13)
	movq	$0, (%r12)
advance:
	add	$8, %r12
	inc	%r13
	inc	%ebx
	dec	%ebp
	jnz	next_msr
	add	$8, %r15
	dec	%r14
	jnz	next_range
done:	hlt
	jmp	done

/*
 * #GP: only the sweep's RDMSR may fault; anything else stops at a HLT with
 * the frame on the stack.  No IRETQ: the frame is dropped and the loop goes on.
 */
gp:
	cmpq	$rd, 8(%rsp)		/* RIP above the error code */
	jne	unexpected
	mov	%r10, %rsp
	jmp	faulted
unexpected:
	hlt
	jmp	unexpected

	.p2align 3
ranges:
	.long	0x00000000, 0x2000
	.long	0xc0000000, 0x2000
	.long	0xc0010000, 0x2000
