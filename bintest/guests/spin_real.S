/* pyhost-mode: real -- an endless loop: only a kick from another thread stops it. */
	.code16
	.globl _start
_start:
1:	jmp	1b
