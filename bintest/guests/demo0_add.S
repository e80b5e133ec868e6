/*
 * pyhost-mode: protected -- the vmachmon demo 0: load 4 and 5, add, and stop
 * on an illegal instruction.  The VMM's IDT has no present gate, so the #UD
 * ends in a triple fault (Shutdown) and the VMM reads EAX=4, EBX=5, ECX=9
 * and RIP at `stop`.
 */
	.code32
	.globl _start, stop
_start:
	mov	$4, %eax
	mov	$5, %ebx
	mov	%eax, %ecx
	add	%ebx, %ecx
stop:	ud2
