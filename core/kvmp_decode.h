/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * A small x86 decoder for the instructions guests use to touch MMIO: MOV to
 * and from memory (register or immediate), MOVZX and MOVSX loads, the MOV
 * moffs forms, and the string moves MOVS, STOS and LODS (with REP).  The faulting guest-physical address comes from the
 * hardware, so only the length and the register side of the access matter.
 * Pure logic: it builds in the kernel and as a userspace library for tests.
 */
#ifndef KVMPORT_CORE_KVMP_DECODE_H
#define KVMPORT_CORE_KVMP_DECODE_H

#include "kvmp_os.h"

#define KVMP_INSN_MAX_LEN 15

enum kvmp_insn_kind {
	KVMP_INSN_STORE = 1,	/* the guest writes memory */
	KVMP_INSN_LOAD = 2,	/* the guest reads memory into a register */
	KVMP_INSN_MOVE = 3,	/* MOVS: memory at seg:rSI to memory at ES:rDI */
};

/* the string instructions: one element per MMIO exit, RIP kept until done */
enum kvmp_string_op {
	KVMP_STR_MOVS = 1,
	KVMP_STR_STOS = 2,	/* a STORE of rAX to ES:rDI */
	KVMP_STR_LODS = 3,	/* a LOAD of seg:rSI into rAX */
};

struct kvmp_insn {
	u8 length;		/* bytes, prefixes included */
	u8 kind;		/* enum kvmp_insn_kind */
	u8 mem_size;		/* bytes of memory accessed: 1, 2, 4 or 8 */
	u8 reg;			/* GPR index 0-15 (RAX=0 ... R15=15) */
	u8 reg_size;		/* bytes of that register written or read */
	bool reg_high_byte;	/* AH, CH, DH or BH: bits 15:8 of reg 0-3 */
	bool has_imm;		/* a store of an immediate, not of reg */
	bool sign_extend;	/* MOVSX: sign-extend mem_size to reg_size */
	u64 imm;		/* the immediate, truncated to mem_size */
	u8 string;		/* enum kvmp_string_op, or 0 */
	u8 addr_size;		/* string: bytes of rSI, rDI and rCX used */
	u8 seg;			/* string: the source segment, 0 ES ... 5 GS */
	bool rep;		/* string: REP (F3) or F2, which acts the same */
};

/* cpu_mode: 16, 32 or 64 (the default operand size of the code segment) */
int kvmp_decode_mov(const u8 *code, unsigned int avail, int cpu_mode,
		    struct kvmp_insn *insn);

/* a control-register access (SVM without decode assists decodes it itself) */
enum kvmp_cr_kind {
	KVMP_CR_MOV = 1,	/* MOV to CR<cr> from GPR <reg> */
	KVMP_CR_CLTS = 2,	/* clear CR0.TS */
	KVMP_CR_LMSW = 3,	/* CR0 bits 3:0 from GPR <reg> (PE cannot be cleared) */
	KVMP_CR_READ = 4,	/* MOV to GPR <reg> from CR<cr> */
};

struct kvmp_cr_insn {
	u8 length;
	u8 kind;		/* enum kvmp_cr_kind */
	u8 cr;
	u8 reg;			/* GPR index 0-15 */
};

int kvmp_decode_cr(const u8 *code, unsigned int avail, int cpu_mode,
		   struct kvmp_cr_insn *insn);

/* merge a loaded value into a register as the instruction would */
u64 kvmp_insn_load_result(const struct kvmp_insn *insn, u64 old, u64 data);
/* the value a store writes, from the register's current contents */
u64 kvmp_insn_store_value(const struct kvmp_insn *insn, u64 reg_value);

#endif /* KVMPORT_CORE_KVMP_DECODE_H */
