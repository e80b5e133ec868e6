// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * MMIO instruction decoder; see kvmp_decode.h.  Returns the length or a
 * negative errno: -KVMP_EAGAIN when more bytes are needed, -KVMP_EOPNOTSUPP
 * for anything that is not one of the supported forms.
 */
#include "kvmp_decode.h"

struct prefixes {
	bool opsize;
	bool adsize;
	bool lock;
	bool rep;	/* F2 or F3 */
	u8 seg;		/* the last segment override, 0 ES ... 5 GS, or 0xff */
	u8 rex;		/* 0 when there is none */
};

/* segment override prefixes, in the order of the segment numbers */
static const u8 seg_prefix[] = { 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65 };

/*
 * The legacy and REX prefixes: the opcode's index, or -KVMP_EAGAIN; *avail is
 * cut to the longest instruction there is.
 */
static int read_prefixes(const u8 *code, unsigned int *availp, int cpu_mode,
			 struct prefixes *pfx)
{
	unsigned int i, avail = *availp;

	if (avail > KVMP_INSN_MAX_LEN)
		*availp = avail = KVMP_INSN_MAX_LEN;
	for (i = 0;; i++) {
		if (i >= avail)
			return -KVMP_EAGAIN;
		switch (code[i]) {
		case 0x66:
			pfx->opsize = true;
			pfx->rex = 0;
			continue;
		case 0x67:
			pfx->adsize = true;
			pfx->rex = 0;
			continue;
		case 0xf0:
			pfx->lock = true;
			pfx->rex = 0;
			continue;
		case 0x26: case 0x2e: case 0x36: case 0x3e: case 0x64:
		case 0x65:
			/* 64-bit mode ignores all but FS and GS */
			if (cpu_mode != 64 || code[i] >= 0x64)
				for (pfx->seg = 0; seg_prefix[pfx->seg] != code[i];
				     pfx->seg++)
					;
			pfx->rex = 0;	/* a REX counts only right before the opcode */
			continue;
		case 0xf2: case 0xf3:
			pfx->rep = true;
			pfx->rex = 0;
			continue;
		}
		if (cpu_mode == 64 && (code[i] & 0xf0) == 0x40) {
			pfx->rex = code[i];
			continue;
		}
		return i;
	}
}

static u64 size_mask(unsigned int size)
{
	return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
}

static u64 read_le(const u8 *p, unsigned int n)
{
	u64 v = 0;
	unsigned int i;

	for (i = 0; i < n; i++)
		v |= (u64)p[i] << (8 * i);
	return v;
}

static u64 sign_extend(u64 v, unsigned int size)
{
	unsigned int shift = 64 - size * 8;

	if (size >= 8)
		return v;
	return (u64)((long long)(v << shift) >> shift);
}

/* bytes of ModRM, SIB and displacement for a memory operand (mod != 3) */
static int modrm_bytes(const u8 *p, unsigned int avail, unsigned int adsize)
{
	u8 modrm, mod, rm;
	int n = 1;

	if (avail < 1)
		return -KVMP_EAGAIN;
	modrm = p[0];
	mod = modrm >> 6;
	rm = modrm & 7;
	if (mod == 3)
		return -KVMP_EOPNOTSUPP;	/* register operand: not memory */
	if (adsize == 2) {
		if (mod == 1)
			n += 1;
		else if (mod == 2 || (mod == 0 && rm == 6))
			n += 2;
		return n;
	}
	if (rm == 4) {
		if (avail < 2)
			return -KVMP_EAGAIN;
		n += 1;
		if (mod == 0 && (p[1] & 7) == 5)
			n += 4;
	} else if (mod == 0 && rm == 5) {
		n += 4;		/* disp32, or RIP-relative in 64-bit mode */
	}
	if (mod == 1)
		n += 1;
	else if (mod == 2)
		n += 4;
	return n;
}

int kvmp_decode_mov(const u8 *code, unsigned int avail, int cpu_mode,
		    struct kvmp_insn *insn)
{
	struct prefixes pfx = { .seg = 0xff };
	unsigned int i = 0, opsize, adsize, imm_size = 0;
	int m;
	u8 op, modrm = 0;
	bool has_modrm = true, twobyte = false;

	kvmp_os_memset(insn, 0, sizeof(*insn));
	m = read_prefixes(code, &avail, cpu_mode, &pfx);
	if (m < 0)
		return m;
	i = m;

	op = code[i++];
	if (op == 0x0f) {
		if (i >= avail)
			return -KVMP_EAGAIN;
		op = code[i++];
		twobyte = true;
	}

	if (cpu_mode == 64)
		opsize = (pfx.rex & 8) ? 8 : pfx.opsize ? 2 : 4;
	else if (cpu_mode == 32)
		opsize = pfx.opsize ? 2 : 4;
	else
		opsize = pfx.opsize ? 4 : 2;
	if (cpu_mode == 64)
		adsize = pfx.adsize ? 4 : 8;
	else if (cpu_mode == 32)
		adsize = pfx.adsize ? 2 : 4;
	else
		adsize = pfx.adsize ? 4 : 2;

	insn->reg_size = opsize;
	insn->mem_size = opsize;
	if (twobyte) {
		switch (op) {
		case 0xb6: case 0xb7: case 0xbe: case 0xbf:
			insn->kind = KVMP_INSN_LOAD;
			insn->mem_size = (op & 1) ? 2 : 1;
			insn->sign_extend = op >= 0xbe;
			break;
		default:
			return -KVMP_EOPNOTSUPP;
		}
	} else {
		switch (op) {
		case 0x88: case 0x89:
			insn->kind = KVMP_INSN_STORE;
			break;
		case 0x8a: case 0x8b:
			insn->kind = KVMP_INSN_LOAD;
			break;
		case 0xc6: case 0xc7:
			insn->kind = KVMP_INSN_STORE;
			insn->has_imm = true;
			break;
		case 0xa0: case 0xa1:
			insn->kind = KVMP_INSN_LOAD;
			has_modrm = false;
			break;
		case 0xa2: case 0xa3:
			insn->kind = KVMP_INSN_STORE;
			has_modrm = false;
			break;
		case 0xa4: case 0xa5:
			insn->kind = KVMP_INSN_MOVE;
			insn->string = KVMP_STR_MOVS;
			break;
		case 0xaa: case 0xab:
			insn->kind = KVMP_INSN_STORE;
			insn->string = KVMP_STR_STOS;
			break;
		case 0xac: case 0xad:
			insn->kind = KVMP_INSN_LOAD;
			insn->string = KVMP_STR_LODS;
			break;
		default:
			return -KVMP_EOPNOTSUPP;
		}
		if (!(op & 1)) {	/* the byte forms */
			insn->mem_size = 1;
			insn->reg_size = 1;
		}
	}

	if (insn->string) {
		insn->reg = 0;		/* AL, AX, EAX or RAX */
		insn->addr_size = adsize;
		insn->rep = pfx.rep;
		insn->seg = pfx.seg == 0xff ? 3 : pfx.seg;	/* DS */
	} else if (has_modrm) {
		if (i >= avail)
			return -KVMP_EAGAIN;
		modrm = code[i];
		if ((op == 0xc6 || op == 0xc7) && !twobyte && ((modrm >> 3) & 7))
			return -KVMP_EOPNOTSUPP;	/* only /0 is MOV */
		m = modrm_bytes(code + i, avail - i, adsize);
		if (m < 0)
			return m;
		i += m;
		insn->reg = ((modrm >> 3) & 7) | ((pfx.rex & 4) ? 8 : 0);
	} else {
		i += adsize;		/* the moffs: an address of address size */
		insn->reg = 0;		/* AL, AX, EAX or RAX */
	}

	if (insn->has_imm) {
		imm_size = insn->mem_size > 4 ? 4 : insn->mem_size;
		if (i + imm_size > avail)
			return -KVMP_EAGAIN;
		insn->imm = sign_extend(read_le(code + i, imm_size), imm_size) &
			    size_mask(insn->mem_size);
		i += imm_size;
	}
	if (i > avail)
		return -KVMP_EAGAIN;

	/* without REX, byte registers 4-7 are AH, CH, DH, BH */
	if (insn->reg_size == 1 && !pfx.rex && insn->reg >= 4 && insn->reg < 8 &&
	    !insn->has_imm) {
		insn->reg -= 4;
		insn->reg_high_byte = true;
	}
	insn->length = i;
	return i;
}

u64 kvmp_insn_load_result(const struct kvmp_insn *insn, u64 old, u64 data)
{
	u64 v = data & size_mask(insn->mem_size);

	if (insn->sign_extend)
		v = sign_extend(v, insn->mem_size);
	if (insn->reg_high_byte)
		return (old & ~0xff00ULL) | ((v & 0xff) << 8);
	switch (insn->reg_size) {
	case 8:
		return v;
	case 4:		/* 32-bit destinations zero-extend */
		return v & 0xffffffffULL;
	default:
		return (old & ~size_mask(insn->reg_size)) |
		       (v & size_mask(insn->reg_size));
	}
}

u64 kvmp_insn_store_value(const struct kvmp_insn *insn, u64 reg_value)
{
	if (insn->has_imm)
		return insn->imm;
	if (insn->reg_high_byte)
		return (reg_value >> 8) & 0xff;
	return reg_value & size_mask(insn->mem_size);
}

/*
 * MOV to CRn (0f 22), CLTS (0f 06) and LMSW from a register (0f 01 /6, mod
 * 3): the control-register writes SVM intercepts without telling which
 * register they use when the CPU has no decode assists.  LOCK on MOV CR0 is
 * AMD's spelling of CR8.
 */
int kvmp_decode_cr(const u8 *code, unsigned int avail, int cpu_mode,
		   struct kvmp_cr_insn *insn)
{
	struct prefixes pfx = { 0 };
	unsigned int i;
	u8 modrm;
	int m;

	kvmp_os_memset(insn, 0, sizeof(*insn));
	m = read_prefixes(code, &avail, cpu_mode, &pfx);
	if (m < 0)
		return m;
	i = m;
	if (i + 2 > avail)
		return -KVMP_EAGAIN;
	if (code[i] != 0x0f)
		return -KVMP_EOPNOTSUPP;
	switch (code[i + 1]) {
	case 0x06:
		insn->kind = KVMP_CR_CLTS;
		insn->length = i + 2;
		return insn->length;
	case 0x20:
	case 0x22:
	case 0x01:
		break;
	default:
		return -KVMP_EOPNOTSUPP;
	}
	if (i + 3 > avail)
		return -KVMP_EAGAIN;
	modrm = code[i + 2];
	insn->reg = (modrm & 7) | ((pfx.rex & 1) ? 8 : 0);
	insn->length = i + 3;
	if (code[i + 1] == 0x01) {	/* LMSW: only its register form */
		if (((modrm >> 3) & 7) != 6 || (modrm >> 6) != 3)
			return -KVMP_EOPNOTSUPP;
		insn->kind = KVMP_CR_LMSW;
		return insn->length;
	}
	/* MOV CR ignores mod: always registers */
	insn->kind = code[i + 1] == 0x20 ? KVMP_CR_READ : KVMP_CR_MOV;
	insn->cr = ((modrm >> 3) & 7) | ((pfx.rex & 4) ? 8 : 0);
	if (pfx.lock)
		insn->cr |= 8;
	return insn->length;
}
