// SPDX-License-Identifier: GPL-2.0
/*
 * x86 logic shared by every backend: the CPUID the guest may see, the MSR
 * allow list, port I/O and MMIO exits (decoded and finished here, so the
 * backends only report what the hardware said), and the run loop.
 */
#include "kvmp_backend.h"

/* --- CPUID ---------------------------------------------------------------- */
#define BIT(n) (1U << (n))

/* leaf 1: SSE3 PCLMULQDQ SSSE3 CX16 SSE4.1 SSE4.2 MOVBE POPCNT AES RDRAND */
#define CPUID1_ECX_KEEP	(BIT(0) | BIT(1) | BIT(9) | BIT(13) | BIT(19) | \
			 BIT(20) | BIT(22) | BIT(23) | BIT(25) | BIT(30))
#define CPUID1_ECX_HYPERVISOR BIT(31)
/*
 * FPU VME DE PSE TSC MSR PAE CX8 SEP PGE CMOV PAT PSE36 CLFSH MMX FXSR SSE
 * SSE2: not APIC (there is no local APIC model), MTRR, MCE/MCA, DS, ACPI.
 */
#define CPUID1_EDX_KEEP	(BIT(0) | BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(5) | \
			 BIT(6) | BIT(8) | BIT(11) | BIT(13) | BIT(15) | \
			 BIT(16) | BIT(17) | BIT(19) | BIT(23) | BIT(24) | \
			 BIT(25) | BIT(26))
/* leaf 1 ECX: XSAVE, and what needs the AVX state: FMA AVX F16C */
#define CPUID1_ECX_XSAVE	BIT(26)
#define CPUID1_ECX_OSXSAVE	BIT(27)
#define CPUID1_ECX_AVX_GROUP	(BIT(12) | BIT(28) | BIT(29))
#define CPUID7_EBX_AVX2		BIT(5)
#define XSAVE_LEGACY_AND_HEADER	576U
/* leaf 7: FSGSBASE BMI1 SMEP BMI2 ERMS RDSEED ADX SMAP CLFLUSHOPT CLWB SHA */
#define CPUID7_EBX_KEEP	(BIT(0) | BIT(3) | BIT(7) | BIT(8) | BIT(9) | \
			 BIT(18) | BIT(19) | BIT(20) | BIT(23) | BIT(24) | \
			 BIT(29))
/* 0x80000001: LAHF ABM SSE4A MisAlignSSE 3DNowPrefetch */
#define CPUIDX1_ECX_KEEP (BIT(0) | BIT(5) | BIT(6) | BIT(7) | BIT(8))
/* the leaf-1 mirror bits plus SYSCALL NX MMXExt FFXSR 1G-pages LM 3DNow */
#define CPUIDX1_EDX_KEEP ((CPUID1_EDX_KEEP & 0x0183f3ffU) | BIT(11) | \
			  BIT(20) | BIT(22) | BIT(25) | BIT(26) | BIT(29) | \
			  BIT(30) | BIT(31))

static struct kvmp_cpuid_entry2 kvmp_supported[32];
static u32 kvmp_supported_nent;
u64 kvmp_xcr0_supported;
u64 kvmp_host_xcr0;
static u32 kvmp_ymm_end;		/* where the AVX component ends */

/*
 * The backends switch exactly these components on every entry and exit, so
 * they are what guests may enable: the host's x87, SSE and AVX state.
 */
static void kvmp_probe_xsave(void)
{
	u32 a, b, c, d;

	kvmp_xcr0_supported = 0;
	kvmp_cpuid(1, 0, &a, &b, &c, &d);
	if (!(c & CPUID1_ECX_OSXSAVE))	/* the host OS did not turn XSAVE on */
		return;
	kvmp_host_xcr0 = kvmp_xgetbv(0);
	kvmp_xcr0_supported = kvmp_host_xcr0 &
			      (KVMP_XFEATURE_FP | KVMP_XFEATURE_SSE |
			       KVMP_XFEATURE_YMM);
	if ((kvmp_xcr0_supported & (KVMP_XFEATURE_FP | KVMP_XFEATURE_SSE)) !=
	    (KVMP_XFEATURE_FP | KVMP_XFEATURE_SSE)) {
		kvmp_xcr0_supported = 0;
		return;
	}
	if (kvmp_xcr0_supported & KVMP_XFEATURE_YMM) {
		kvmp_cpuid(0xd, 2, &a, &b, &c, &d);	/* size, offset */
		kvmp_ymm_end = a + b;
		if (kvmp_ymm_end > KVMP_XSAVE_AREA_MAX || b < XSAVE_LEGACY_AND_HEADER)
			kvmp_xcr0_supported &= ~KVMP_XFEATURE_YMM;
	}
}

/* the XSAVE area the components of xcr0 need (CPUID 0xd.0 EBX) */
static u32 kvmp_xsave_size(u64 xcr0)
{
	return xcr0 & KVMP_XFEATURE_YMM ? kvmp_ymm_end : XSAVE_LEGACY_AND_HEADER;
}

static void kvmp_add_leaf(u32 leaf, u32 subleaf, u32 flags)
{
	struct kvmp_cpuid_entry2 *e = &kvmp_supported[kvmp_supported_nent++];
	u32 keep;

	e->function = leaf;
	e->index = subleaf;
	e->flags = flags;
	kvmp_cpuid(leaf, subleaf, &e->eax, &e->ebx, &e->ecx, &e->edx);
	switch (leaf) {
	case 0:
		if (e->eax > 0xd)
			e->eax = 0xd;
		if (!kvmp_xcr0_supported && e->eax > 7)
			e->eax = 7;
		break;
	case 1:
		keep = CPUID1_ECX_KEEP;
		if (kvmp_xcr0_supported)
			keep |= CPUID1_ECX_XSAVE;
		if (kvmp_xcr0_supported & KVMP_XFEATURE_YMM)
			keep |= CPUID1_ECX_AVX_GROUP;
		/* OSXSAVE follows the guest's CR4 (kvmp_emulate_cpuid) */
		e->ecx = (e->ecx & keep) | CPUID1_ECX_HYPERVISOR;
		e->edx &= CPUID1_EDX_KEEP;
		e->ebx &= 0x0000ffffU;	/* no logical-CPU count, APIC ID 0 */
		break;
	case 7:
		keep = CPUID7_EBX_KEEP;
		if (kvmp_xcr0_supported & KVMP_XFEATURE_YMM)
			keep |= CPUID7_EBX_AVX2;
		e->eax = 0;
		e->ebx &= keep;
		e->ecx = 0;
		e->edx = 0;
		break;
	case 0xd:
		if (subleaf == 0) {
			e->eax = (u32)kvmp_xcr0_supported;
			e->edx = 0;
			e->ebx = kvmp_xsave_size(kvmp_xcr0_supported);
			e->ecx = e->ebx;
		} else if (subleaf == 1) {
			e->eax &= BIT(0);	/* XSAVEOPT; not XSAVEC/XSAVES */
			e->ebx = 0;
			e->ecx = 0;
			e->edx = 0;
		} else {	/* the AVX component: size and offset as they are */
			e->ecx = 0;
			e->edx = 0;
		}
		break;
	case 0x80000000:
		if (e->eax > 0x80000008)
			e->eax = 0x80000008;
		break;
	case 0x80000001:
		e->ecx &= CPUIDX1_ECX_KEEP;
		e->edx &= CPUIDX1_EDX_KEEP;
		break;
	case 0x80000007:
		e->eax = 0;
		e->ebx = 0;
		e->ecx = 0;
		e->edx &= BIT(8);	/* invariant TSC */
		break;
	case 0x80000008:
		e->ebx = 0;
		e->ecx = 0;
		e->edx = 0;
		break;
	}
}

void kvmp_build_supported_cpuid(void)
{
	u32 max, max_ext, a, b, c, d, leaf;

	kvmp_supported_nent = 0;
	kvmp_probe_xsave();
	kvmp_cpuid(0, 0, &max, &b, &c, &d);
	kvmp_add_leaf(0, 0, 0);
	kvmp_add_leaf(1, 0, 0);
	if (max >= 7)
		kvmp_add_leaf(7, 0, KVMP_CPUID_FLAG_SIGNIFCANT_INDEX);
	if (kvmp_xcr0_supported) {
		kvmp_add_leaf(0xd, 0, KVMP_CPUID_FLAG_SIGNIFCANT_INDEX);
		kvmp_add_leaf(0xd, 1, KVMP_CPUID_FLAG_SIGNIFCANT_INDEX);
		if (kvmp_xcr0_supported & KVMP_XFEATURE_YMM)
			kvmp_add_leaf(0xd, 2, KVMP_CPUID_FLAG_SIGNIFCANT_INDEX);
	}
	kvmp_cpuid(0x80000000, 0, &max_ext, &a, &c, &d);
	kvmp_add_leaf(0x80000000, 0, 0);
	for (leaf = 0x80000001; leaf <= max_ext && leaf <= 0x80000008; leaf++)
		kvmp_add_leaf(leaf, 0, 0);
}

int kvmp_get_supported_cpuid(u64 uarg)
{
	struct kvmp_cpuid2 hdr;
	u32 asked;

	if (kvmp_os_copy_from_user(&hdr, uarg, sizeof(hdr)))
		return -KVMP_EFAULT;
	asked = hdr.nent;
	/* Linux: too small a buffer is E2BIG and nent is left alone */
	if (asked < kvmp_supported_nent)
		return -KVMP_E2BIG;
	hdr.nent = kvmp_supported_nent;
	if (kvmp_os_copy_to_user(uarg, &hdr, sizeof(hdr)) ||
	    kvmp_os_copy_to_user(uarg + sizeof(hdr), kvmp_supported,
				 kvmp_supported_nent * sizeof(kvmp_supported[0])))
		return -KVMP_EFAULT;
	return 0;
}

struct kvmp_cpuid_entry2 *kvmp_find_cpuid(struct kvmp_vcpu *vcpu, u32 leaf,
					  u32 subleaf)
{
	struct kvmp_cpuid_entry2 *e;
	u32 i;

	for (i = 0; i < vcpu->cpuid_nent; i++) {
		e = &vcpu->cpuid[i];
		if (e->function != leaf)
			continue;
		if ((e->flags & KVMP_CPUID_FLAG_SIGNIFCANT_INDEX) &&
		    e->index != subleaf)
			continue;
		return e;
	}
	return NULL;
}

/*
 * The table the VMM set; a leaf it did not set reads as zeros (AMD's rule).
 * Two fields follow the guest's own state, as on hardware and in Linux KVM:
 * OSXSAVE mirrors CR4.OSXSAVE and 0xd.0 EBX is the size its XCR0 needs.
 */
void kvmp_emulate_cpuid(struct kvmp_vcpu *vcpu, u64 guest_cr4, u32 *eax,
			u32 *ebx, u32 *ecx, u32 *edx)
{
	u32 leaf = *eax, subleaf = *ecx;
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, leaf, subleaf);

	*eax = *ebx = *ecx = *edx = 0;
	if (!e)
		return;
	*eax = e->eax;
	*ebx = e->ebx;
	*ecx = e->ecx;
	*edx = e->edx;
	if (leaf == 1 && kvmp_xcr0_supported) {
		*ecx &= ~CPUID1_ECX_OSXSAVE;
		if (guest_cr4 & KVMP_CR4_OSXSAVE)
			*ecx |= CPUID1_ECX_OSXSAVE;
	}
	if (leaf == 0xd && subleaf == 0 && kvmp_xcr0_supported)
		*ebx = kvmp_xsave_size(vcpu->xcr0);
}

/*
 * XSETBV: XCR0 may hold what the host switches and the VMM's CPUID 0xd.0
 * offers; x87 always; AVX only with SSE.  Non-zero means #GP for the guest.
 */
int kvmp_set_xcr(struct kvmp_vcpu *vcpu, u32 index, u64 value)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 0xd, 0);
	u64 allowed = KVMP_XFEATURE_FP;

	if (e)
		allowed |= (((u64)e->edx << 32) | e->eax) & kvmp_xcr0_supported;
	if (index != 0 || !(value & KVMP_XFEATURE_FP) || (value & ~allowed))
		return -1;
	if ((value & KVMP_XFEATURE_YMM) && !(value & KVMP_XFEATURE_SSE))
		return -1;
	vcpu->xcr0 = value;
	return 0;
}

/* --- MSRs ----------------------------------------------------------------- */
#define MSR_IA32_TSC		0x10
#define MSR_IA32_APICBASE	0x1b
#define MSR_IA32_MISC_ENABLE	0x1a0
#define APIC_BASE_DEFAULT	0xfee00000ULL
#define APIC_BASE_ENABLE	(1ULL << 11)
#define APIC_BASE_BSP		(1ULL << 8)

/* what the guest and KVM_GET/SET_MSRS may touch; the backend keeps most */
const u32 kvmp_msr_list[] = {
	MSR_IA32_TSC, MSR_IA32_APICBASE, 0x174, 0x175, 0x176,
	MSR_IA32_MISC_ENABLE, 0x277, 0xc0000080, 0xc0000081, 0xc0000082,
	0xc0000083, 0xc0000084, 0xc0000100, 0xc0000101, 0xc0000102,
};
const unsigned int kvmp_msr_list_len =
	ARRAY_SIZE(kvmp_msr_list);

static u64 kvmp_apic_base(struct kvmp_vcpu *vcpu)
{
	if (!vcpu->apic_base)
		vcpu->apic_base = APIC_BASE_DEFAULT | APIC_BASE_ENABLE |
				  (vcpu->id == 0 ? APIC_BASE_BSP : 0);
	return vcpu->apic_base;
}

int kvmp_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	switch (index) {
	case MSR_IA32_APICBASE:
		*data = kvmp_apic_base(vcpu);
		return 0;
	case MSR_IA32_MISC_ENABLE:
		*data = vcpu->misc_enable;
		return 0;
	}
	return kvmp_backend->get_msr(vcpu, index, data);
}

int kvmp_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	switch (index) {
	case MSR_IA32_APICBASE:
		vcpu->apic_base = data;
		return 0;
	case MSR_IA32_MISC_ENABLE:
		vcpu->misc_enable = data;
		return 0;
	}
	return kvmp_backend->set_msr(vcpu, index, data);
}

/* --- exits the core finishes ------------------------------------------------ */
void kvmp_internal_error(struct kvmp_vcpu *vcpu, u32 suberror, u64 data0,
			 u64 data1)
{
	struct kvmp_run *run = vcpu->run;

	run->exit_reason = KVMP_EXIT_INTERNAL_ERROR;
	run->internal.suberror = suberror;
	run->internal.ndata = 2;
	run->internal.data[0] = data0;
	run->internal.data[1] = data1;
}

static u64 kvmp_size_mask(unsigned int size)
{
	return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
}

/* write a register as an instruction with this address size would */
static u64 kvmp_addr_update(u64 old, u64 value, unsigned int asize)
{
	if (asize == 2)
		return (old & ~0xffffULL) | (value & 0xffff);
	return value & kvmp_size_mask(asize);
}

static u64 kvmp_seg_base(const struct kvmp_sregs *s, int seg)
{
	const struct kvmp_segment *segs[] = { &s->es, &s->cs, &s->ss, &s->ds,
					      &s->fs, &s->gs };

	/* in 64-bit mode only FS and GS have a base */
	if ((s->efer & KVMP_EFER_LMA) && s->cs.l && seg != KVMP_SEG_FS &&
	    seg != KVMP_SEG_GS)
		return 0;
	return segs[seg]->base;
}

static u8 *kvmp_pio_data(struct kvmp_vcpu *vcpu)
{
	return (u8 *)vcpu->run + KVMP_PIO_OFFSET;
}

/*
 * With EFLAGS.DF set a string instruction walks memory downwards; the run
 * area holds the elements in the order the VMM sees them (first one first),
 * so the block read from or written to guest memory is reversed by element.
 */
static void kvmp_reverse_elements(u8 *d, u64 n, u64 size)
{
	u64 i, j;
	u8 t;

	for (i = 0; i < n / 2; i++) {
		for (j = 0; j < size; j++) {
			t = d[i * size + j];
			d[i * size + j] = d[(n - 1 - i) * size + j];
			d[(n - 1 - i) * size + j] = t;
		}
	}
}

/*
 * A port access the backend decoded.  OUT data (and OUTS data from guest
 * memory) goes into the run area now; IN data comes back on the next KVM_RUN.
 */
int kvmp_exit_pio(struct kvmp_vcpu *vcpu, struct kvmp_pio *pio)
{
	struct kvmp_run *run = vcpu->run;
	struct kvmp_sregs s;
	struct kvmp_regs regs;
	u64 count = 1, src;

	/* what the backend read from the hardware indexes tables: check it */
	if ((pio->size != 1 && pio->size != 2 && pio->size != 4) ||
	    (pio->string && ((pio->addr_size != 2 && pio->addr_size != 4 &&
			      pio->addr_size != 8) ||
			     pio->seg < KVMP_SEG_ES || pio->seg > KVMP_SEG_GS))) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
				    pio->size | (u64)pio->addr_size << 8 |
				    (u64)(u32)pio->seg << 16, pio->port);
		return KVMP_TO_USER;
	}
	kvmp_backend->get_regs(vcpu, &regs);
	if (pio->string) {
		if (pio->rep) {
			count = regs.rcx & kvmp_size_mask(pio->addr_size);
			if (!count) {		/* REP with RCX = 0 does nothing */
				regs.rip = pio->next_rip;
				kvmp_backend->set_regs(vcpu, &regs);
				return KVMP_REENTER;
			}
		}
		if (count > KVMP_PAGE_SIZE / pio->size)
			count = KVMP_PAGE_SIZE / pio->size;
		if (!pio->in) {
			kvmp_backend->get_sregs(vcpu, &s);
			src = kvmp_seg_base(&s, pio->seg) +
			      (regs.rsi & kvmp_size_mask(pio->addr_size));
			if (regs.rflags & KVMP_EFLAGS_DF)
				src -= (count - 1) * pio->size;
			if (kvmp_read_guest_virt(vcpu, &s, src, kvmp_pio_data(vcpu),
						 count * pio->size)) {
				kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
						    src, regs.rip);
				return KVMP_TO_USER;
			}
			if (regs.rflags & KVMP_EFLAGS_DF)	/* deliver in order */
				kvmp_reverse_elements(kvmp_pio_data(vcpu), count,
						      pio->size);
		}
	} else if (!pio->in) {
		kvmp_os_memcpy(kvmp_pio_data(vcpu), &regs.rax, pio->size);
	}
	pio->count = count;
	pio->pending = true;
	vcpu->pio = *pio;

	run->exit_reason = KVMP_EXIT_IO;
	run->io.direction = pio->in ? KVMP_EXIT_IO_IN : KVMP_EXIT_IO_OUT;
	run->io.size = pio->size;
	run->io.port = pio->port;
	run->io.count = count;
	run->io.data_offset = KVMP_PIO_OFFSET;
	return KVMP_TO_USER;
}

static int kvmp_complete_pio(struct kvmp_vcpu *vcpu)
{
	struct kvmp_pio *pio = &vcpu->pio;
	u64 bytes = pio->count * pio->size, dst;
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	bool down;

	pio->pending = false;
	kvmp_backend->get_regs(vcpu, &regs);
	down = regs.rflags & KVMP_EFLAGS_DF;
	if (!pio->string) {
		if (pio->in) {
			u64 v = 0;

			kvmp_os_memcpy(&v, kvmp_pio_data(vcpu), pio->size);
			if (pio->size == 4)	/* a 32-bit write zero-extends */
				regs.rax = v;
			else
				regs.rax = (regs.rax & ~kvmp_size_mask(pio->size)) | v;
		}
		regs.rip = pio->next_rip;
		kvmp_backend->set_regs(vcpu, &regs);
		return 0;
	}
	if (pio->in) {
		kvmp_backend->get_sregs(vcpu, &s);
		dst = kvmp_seg_base(&s, KVMP_SEG_ES) +
		      (regs.rdi & kvmp_size_mask(pio->addr_size));
		if (down)
			dst -= bytes - pio->size;
		if (down)	/* element i goes to RDI - i * size */
			kvmp_reverse_elements(kvmp_pio_data(vcpu), pio->count,
					      pio->size);
		if (kvmp_write_guest_virt(vcpu, &s, dst, kvmp_pio_data(vcpu), bytes))
			return -KVMP_EFAULT;
		regs.rdi = kvmp_addr_update(regs.rdi, down ? regs.rdi - bytes :
					    regs.rdi + bytes, pio->addr_size);
	} else {
		regs.rsi = kvmp_addr_update(regs.rsi, down ? regs.rsi - bytes :
					    regs.rsi + bytes, pio->addr_size);
	}
	if (pio->rep)
		regs.rcx = kvmp_addr_update(regs.rcx, regs.rcx - pio->count,
					    pio->addr_size);
	/* more to do: leave RIP on the instruction so it runs again */
	if (!pio->rep || !(regs.rcx & kvmp_size_mask(pio->addr_size)))
		regs.rip = pio->next_rip;
	kvmp_backend->set_regs(vcpu, &regs);
	return 0;
}

static int kvmp_cpu_mode(const struct kvmp_sregs *s)
{
	if ((s->efer & KVMP_EFER_LMA) && s->cs.l)
		return 64;
	return s->cs.db ? 32 : 16;
}

static u64 *kvmp_gpr(struct kvmp_regs *r, unsigned int i)
{
	u64 *gprs[] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
			&r->rsi, &r->rdi, &r->r8, &r->r9, &r->r10, &r->r11,
			&r->r12, &r->r13, &r->r14, &r->r15 };

	return gprs[i & 15];
}

/*
 * A guest access to a guest-physical address no slot backs.  insn_bytes are
 * the hardware's (decode assists) or NULL: then fetch them from CS:RIP.
 */
int kvmp_exit_mmio(struct kvmp_vcpu *vcpu, u64 gpa, const u8 *insn_bytes,
		   unsigned int insn_len)
{
	struct kvmp_run *run = vcpu->run;
	struct kvmp_mmio *mmio = &vcpu->mmio;
	u8 code[KVMP_INSN_MAX_LEN];
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	unsigned int avail;
	u64 linear, v;
	int n;

	kvmp_backend->get_regs(vcpu, &regs);
	kvmp_backend->get_sregs(vcpu, &s);
	if (insn_bytes && insn_len) {
		/* a hardware length, yet only KVMP_INSN_MAX_LEN bytes fit */
		avail = insn_len < KVMP_INSN_MAX_LEN ? insn_len : KVMP_INSN_MAX_LEN;
		kvmp_os_memcpy(code, insn_bytes, avail);
	} else {
		linear = s.cs.base + regs.rip;
		if (kvmp_cpu_mode(&s) != 64)
			linear &= 0xffffffffULL;
		/* up to the end of the page first: the next may not exist */
		avail = KVMP_PAGE_SIZE - (linear & (KVMP_PAGE_SIZE - 1));
		if (avail > KVMP_INSN_MAX_LEN)
			avail = KVMP_INSN_MAX_LEN;
		if (kvmp_read_guest_virt(vcpu, &s, linear, code, avail))
			avail = 0;
		if (avail < KVMP_INSN_MAX_LEN &&
		    !kvmp_read_guest_virt(vcpu, &s, linear + avail, code + avail,
					  KVMP_INSN_MAX_LEN - avail))
			avail = KVMP_INSN_MAX_LEN;
	}
	n = kvmp_decode_mov(code, avail, kvmp_cpu_mode(&s), &mmio->insn);
	if (n < 0) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, gpa,
				    regs.rip);
		return KVMP_TO_USER;
	}
	mmio->next_rip = regs.rip + n;
	mmio->pending = true;
	run->exit_reason = KVMP_EXIT_MMIO;
	run->mmio.phys_addr = gpa;
	run->mmio.len = mmio->insn.mem_size;
	run->mmio.is_write = mmio->insn.kind == KVMP_INSN_STORE;
	kvmp_os_memset(run->mmio.data, 0, sizeof(run->mmio.data));
	if (run->mmio.is_write) {
		v = kvmp_insn_store_value(&mmio->insn,
					  *kvmp_gpr(&regs, mmio->insn.reg));
		kvmp_os_memcpy(run->mmio.data, &v, mmio->insn.mem_size);
	}
	return KVMP_TO_USER;
}

static void kvmp_complete_mmio(struct kvmp_vcpu *vcpu)
{
	struct kvmp_mmio *mmio = &vcpu->mmio;
	struct kvmp_regs regs;
	u64 data = 0, *reg;

	mmio->pending = false;
	kvmp_backend->get_regs(vcpu, &regs);
	if (mmio->insn.kind == KVMP_INSN_LOAD) {
		kvmp_os_memcpy(&data, vcpu->run->mmio.data, mmio->insn.mem_size);
		reg = kvmp_gpr(&regs, mmio->insn.reg);
		*reg = kvmp_insn_load_result(&mmio->insn, *reg, data);
	}
	regs.rip = mmio->next_rip;
	kvmp_backend->set_regs(vcpu, &regs);
}

/*
 * RDPMC, answered as Linux's KVM answers a guest whose counters it never
 * programmed (kvmport gives guests no PMU): #GP (-KVMP_EINVAL) from CPL > 0
 * in protected mode without CR4.PCE, or for a counter AMD's four (six with
 * PerfCtrCore in the VMM's CPUID) do not have; otherwise 0.  Never the
 * host's counters.
 */
#define KVMP_CR4_PCE	(1ULL << 8)

int kvmp_emulate_rdpmc(struct kvmp_vcpu *vcpu, u32 ecx, unsigned int cpl,
		       u64 cr0, u64 cr4, u64 *value)
{
	const struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 0x80000001, 0);
	u32 counters = e && (e->ecx & (1U << 23)) ? 6 : 4;

	if (cpl && (cr0 & KVMP_CR0_PE) && !(cr4 & KVMP_CR4_PCE))
		return -KVMP_EINVAL;
	if ((ecx & ~(3U << 30)) >= counters)
		return -KVMP_EINVAL;
	*value = 0;
	return 0;
}

/* --- the run loop ------------------------------------------------------------- */
static void kvmp_report_state(struct kvmp_vcpu *vcpu)
{
	struct kvmp_run *run = vcpu->run;

	run->if_flag = kvmp_backend->if_flag(vcpu);
	run->ready_for_interrupt_injection = vcpu->pending_irq < 0 &&
		kvmp_backend->interrupt_allowed(vcpu);
	run->apic_base = kvmp_apic_base(vcpu);
	run->cr8 = 0;
	run->flags = 0;
}

/*
 * Before each entry: what the VMM queued (KVM_NMI, KVM_INTERRUPT) goes in
 * once the guest can take it, an NMI before an interrupt, one event an entry
 * (the backend refuses a second while one is pending); otherwise a window
 * exit is armed for when it can, and for the VMM's own window request.
 */
static void kvmp_inject_pending(struct kvmp_vcpu *vcpu)
{
	const struct kvmp_backend *be = kvmp_backend;
	bool nmi_window = false;

	if (vcpu->pending_nmi) {
		if (be->nmi_allowed(vcpu)) {
			be->inject_nmi(vcpu);
			vcpu->pending_nmi = false;
		} else {
			nmi_window = true;
		}
	}
	if (vcpu->pending_irq >= 0 && be->interrupt_allowed(vcpu)) {
		be->inject_irq(vcpu, vcpu->pending_irq);
		vcpu->pending_irq = -1;
	}
	be->set_windows(vcpu, vcpu->pending_irq >= 0 ||
			vcpu->run->request_interrupt_window, nmi_window);
}

int kvmp_vcpu_run(struct kvmp_vcpu *vcpu)
{
	struct kvmp_run *run = vcpu->run;
	int r = 0;

	/* first finish what the VMM answered (as Linux: before immediate_exit) */
	if (vcpu->pio.pending) {
		r = kvmp_complete_pio(vcpu);
		if (r)
			goto out;
	}
	if (vcpu->mmio.pending)
		kvmp_complete_mmio(vcpu);

	for (;;) {
		if (run->immediate_exit || kvmp_os_signal_pending()) {
			run->exit_reason = KVMP_EXIT_INTR;
			r = -KVMP_EINTR;
			break;
		}
		kvmp_os_cond_resched();
		kvmp_inject_pending(vcpu);
		r = kvmp_backend->run(vcpu);
		if (r <= 0)
			break;
		/* the VMM asked to hear when it may inject: tell it now */
		if (run->request_interrupt_window && vcpu->pending_irq < 0 &&
		    kvmp_backend->interrupt_allowed(vcpu)) {
			run->exit_reason = KVMP_EXIT_IRQ_WINDOW_OPEN;
			r = 0;
			break;
		}
	}
out:
	kvmp_report_state(vcpu);
	return r;
}
