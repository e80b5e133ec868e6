/*
 * pyhost-mode: protected -- the vmachmon demo 0: load 4 and 5, add, and stop
 * on an illegal instruction.  The VMM's trap IDT turns the #UD into a stop
 * with every register intact: EAX=4, EBX=5, ECX=9, and the exception frame
 * says it happened at `stop`.
 */
	.code32
	.globl _start, stop
_start:
	mov	$4, %eax
	mov	$5, %ebx
	mov	%eax, %ecx
	add	%ebx, %ecx
stop:	ud2
