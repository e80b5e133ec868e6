// SPDX-License-Identifier: GPL-2.0 OR MIT
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
 * FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36
 * CLFSH MMX FXSR SSE SSE2; not DS, ACPI.  APIC as in Linux whatever the
 * irqchip: a VMM without an in-kernel one (QEMU, kernel-irqchip=off) models
 * the local APIC itself and clears the bit if it does not.  MTRR and MCE/MCA
 * have their MSRs in the core.
 */
#define CPUID1_EDX_KEEP	(BIT(0) | BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(5) | \
			 BIT(6) | BIT(7) | BIT(8) | BIT(9) | BIT(11) | \
			 BIT(12) | BIT(13) | BIT(14) | BIT(15) | BIT(16) | \
			 BIT(17) | BIT(19) | BIT(23) | BIT(24) | BIT(25) | \
			 BIT(26))
/* leaf 1 ECX: XSAVE, and what needs the AVX state: FMA AVX F16C */
#define CPUID1_ECX_XSAVE	BIT(26)
#define CPUID1_ECX_OSXSAVE	BIT(27)
#define CPUID1_EDX_APIC		BIT(9)
#define APIC_BASE_ENABLE	(1ULL << 11)
#define CPUID1_ECX_AVX_GROUP	(BIT(12) | BIT(28) | BIT(29))
#define CPUID7_EBX_AVX2		BIT(5)
/* IA32_TSC_ADJUST: kept in software, so offered on every CPU (as Linux) */
#define CPUID7_EBX_TSC_ADJUST	BIT(1)
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
static bool kvmp_amd;		/* AMD or Hygon: kvm_amd's MSRs, else kvm_intel's */
static bool kvmp_host_ibpb;	/* the CPU has the indirect branch prediction barrier */
static u32 kvmp_supported_nent;
u64 kvmp_xcr0_supported;
u64 kvmp_host_xcr0;
u32 kvmp_mxcsr_mask;
static u32 kvmp_ymm_end;		/* where the AVX component ends */

/*
 * The backends switch exactly these components on every entry and exit, so
 * they are what guests may enable: the host's x87, SSE and AVX state.
 */
static void kvmp_probe_xsave(void)
{
	static u8 fx[512] __aligned(16);
	u32 a, b, c, d;

	/*
	 * FXSAVE's MXCSR_MASK: the MXCSR bits this CPU has (0 means the
	 * original 0xffbf).  FXSAVE only stores, so no FPU context is needed.
	 */
	asm volatile("fxsave64 %0" : "=m"(fx));
	kvmp_os_memcpy(&kvmp_mxcsr_mask, fx + 28, 4);
	if (!kvmp_mxcsr_mask)
		kvmp_mxcsr_mask = 0xffbf;

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
		e->ebx = (e->ebx & keep) | CPUID7_EBX_TSC_ADJUST;
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
	/* "AuthenticAMD" and "HygonGenuine" (EBX "Auth" / "Hygo") */
	kvmp_amd = b == 0x68747541 || b == 0x6f677948;
	/* IBPB: CPUID 7.0 EDX[26] (Intel's SPEC_CTRL), 0x80000008 EBX[12] (AMD) */
	kvmp_host_ibpb = false;
	if (max >= 7) {
		kvmp_cpuid(7, 0, &a, &b, &c, &d);
		kvmp_host_ibpb = d & BIT(26);
	}
	kvmp_cpuid(0x80000000, 0, &a, &b, &c, &d);
	if (a >= 0x80000008) {
		kvmp_cpuid(0x80000008, 0, &a, &b, &c, &d);
		kvmp_host_ibpb |= !!(b & BIT(12));
	}
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
 * The fields that follow the guest's own state, as on hardware and in Linux
 * (kvm_update_cpuid_runtime): OSXSAVE mirrors CR4.OSXSAVE, APIC the APIC
 * base's enable bit, 0xd.0 EBX is the XSAVE area its XCR0 needs.  Applied to
 * what the guest's CPUID answers and to what KVM_GET_CPUID2 returns, so the
 * two agree (Linux's cpuid_test checks that they do).
 */
void kvmp_cpuid_runtime(struct kvmp_vcpu *vcpu, u64 guest_cr4,
			struct kvmp_cpuid_entry2 *e)
{
	if (e->function == 1) {
		if (kvmp_xcr0_supported) {
			e->ecx &= ~CPUID1_ECX_OSXSAVE;
			if (guest_cr4 & KVMP_CR4_OSXSAVE)
				e->ecx |= CPUID1_ECX_OSXSAVE;
		}
		e->edx &= ~CPUID1_EDX_APIC;
		if (vcpu->apic_base & APIC_BASE_ENABLE)
			e->edx |= CPUID1_EDX_APIC;
	}
	if (e->function == 0xd && e->index == 0)
		e->ebx = kvmp_xsave_size(vcpu->xcr0);
}

/* The table the VMM set; a leaf it did not set reads as zeros (AMD's rule). */
void kvmp_emulate_cpuid(struct kvmp_vcpu *vcpu, u64 guest_cr4, u32 *eax,
			u32 *ebx, u32 *ecx, u32 *edx)
{
	struct kvmp_cpuid_entry2 *found = kvmp_find_cpuid(vcpu, *eax, *ecx);
	struct kvmp_cpuid_entry2 e;

	*eax = *ebx = *ecx = *edx = 0;
	if (!found)
		return;
	e = *found;
	kvmp_cpuid_runtime(vcpu, guest_cr4, &e);
	*eax = e.eax;
	*ebx = e.ebx;
	*ecx = e.ecx;
	*edx = e.edx;
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
/*
 * Every MSR answers as Linux KVM answers it (value or #GP), for the guest and
 * for KVM_GET/SET_MSRS, which may do more ("host").  The core keeps the state
 * that is the same on every CPU; the backend keeps what lives in its VMCB or
 * VMCS (EFER, the SYSCALL/SYSENTER and segment-base MSRs, PAT, TSC).
 */
#define APIC_BASE_DEFAULT	0xfee00000ULL
#define APIC_BASE_BSP		(1ULL << 8)
#define APIC_BASE_X2APIC	(1ULL << 10)
#define MISC_ENABLE_EMON	(1ULL << 7)
#define MISC_ENABLE_BTS_UNAVAIL	(1ULL << 11)
#define MISC_ENABLE_PEBS_UNAVAIL (1ULL << 12)
#define MCG_CTL_P		(1ULL << 8)
#define MCG_CMCI_P		(1ULL << 10)
#define HWCR_MCSTATUSWREN	(1ULL << 18)
#define VM_CR_LOCK		(1ULL << 3)
#define VM_CR_SVMDIS		(1ULL << 4)
#define VM_CR_VALID		0x1fULL
#define DE_CFG_LFENCE_SERIALIZE	(1ULL << 1)
#define PLATFORM_INFO_CPUID_FAULT (1ULL << 31)

/*
 * What KVM_GET_MSR_INDEX_LIST reports: the MSRs a VMM saves and restores.
 * QEMU writes the optional ones (SMBASE, HSAVE_PA, ...) only when listed.
 */
const u32 kvmp_msr_list[] = {
	MSR_IA32_TSC, MSR_IA32_APICBASE, MSR_SYSENTER_CS, MSR_SYSENTER_ESP,
	MSR_SYSENTER_EIP, MSR_IA32_MISC_ENABLE, MSR_PAT, MSR_EFER, MSR_STAR,
	MSR_LSTAR, MSR_CSTAR, MSR_SFMASK, MSR_FS_BASE, MSR_GS_BASE,
	MSR_KERNEL_GS_BASE,
	MSR_KVM_WALL_CLOCK, MSR_KVM_SYSTEM_TIME, MSR_UCODE_REV, MSR_SMBASE,
	MSR_SMI_COUNT, MSR_MCG_STATUS, MSR_MCG_CTL, MSR_K7_HWCR,
	MSR_VM_HSAVE_PA, MSR_TSC_ADJUST,
};
const unsigned int kvmp_msr_list_len =
	ARRAY_SIZE(kvmp_msr_list);


/* the state a new VCPU's MSRs have in Linux KVM */
void kvmp_msr_init(struct kvmp_vcpu *vcpu)
{
	vcpu->apic_base = APIC_BASE_DEFAULT | APIC_BASE_ENABLE |
			  (vcpu->id == 0 ? APIC_BASE_BSP : 0);
	vcpu->misc_enable = MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_BTS_UNAVAIL;
	vcpu->msr.platform_info = PLATFORM_INFO_CPUID_FAULT;
	/* kvm_amd and kvm_intel each start with their own microcode revision */
	vcpu->msr.ucode_rev = kvmp_amd ? 0x01000065 : 0x100000000ULL;
	vcpu->msr.smbase = 0x30000;
	/* all banks, zeroed, no MCG_CTL until KVM_X86_SETUP_MCE (as Linux) */
	vcpu->msr.mcg_cap = KVMP_MCE_BANKS_MAX;
}

static u64 kvmp_apic_base(struct kvmp_vcpu *vcpu)
{
	return vcpu->apic_base;
}

/*
 * The first entry of a leaf whatever its index, as Linux's lookups of leaves
 * that have no subleaves (kvm_find_cpuid_entry): the VMM's table may still
 * flag the entry's index significant.
 */
static struct kvmp_cpuid_entry2 *kvmp_find_cpuid_leaf(struct kvmp_vcpu *vcpu,
						      u32 leaf)
{
	u32 i;

	for (i = 0; i < vcpu->cpuid_nent; i++)
		if (vcpu->cpuid[i].function == leaf)
			return &vcpu->cpuid[i];
	return NULL;
}

/*
 * The guest's MAXPHYADDR, Linux's cpuid_query_maxphyaddr: CPUID 0x80000008
 * EAX[7:0] as the VMM set it (any value: a small one reserves what it
 * leaves out), 36 without the leaf.
 */
static unsigned int kvmp_guest_maxphyaddr(struct kvmp_vcpu *vcpu)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid_leaf(vcpu, 0x80000000);

	if (e && e->eax >= 0x80000008) {
		e = kvmp_find_cpuid_leaf(vcpu, 0x80000008);
		if (e)
			return e->eax & 0xff;
	}
	return 36;
}

/* the guest-physical address bits above MAXPHYADDR (Linux's rsvd_bits(maxphyaddr, 63)) */
u64 kvmp_reserved_gpa_bits(struct kvmp_vcpu *vcpu)
{
	unsigned int bits = kvmp_guest_maxphyaddr(vcpu);

	return bits > 63 ? 0 : ~0ULL << bits;
}

/* MTRR memory types: UC WC WT WP WB */
static bool kvmp_mtrr_type_ok(u64 t)
{
	return t < 8 && ((1U << t) & 0x73);
}

/* PAT entries: 0, 1, 4, 5, 6, 7 */
static bool kvmp_pat_ok(u64 v)
{
	if (v & 0xf8f8f8f8f8f8f8f8ULL)
		return false;
	return (v | ((v & 0x0202020202020202ULL) << 1)) == v;
}

/* index into mtrr_fixed[] of a fixed-range MTRR, or -1 */
static int kvmp_mtrr_fixed_index(u32 index)
{
	if (index == MSR_MTRR_FIX64K)
		return 0;
	if (index == MSR_MTRR_FIX16K || index == MSR_MTRR_FIX16K + 1)
		return 1 + index - MSR_MTRR_FIX16K;
	if (index >= MSR_MTRR_FIX4K && index < MSR_MTRR_FIX4K + 8)
		return 3 + index - MSR_MTRR_FIX4K;
	return -1;
}

static bool kvmp_is_mtrr(u32 index)
{
	return (index >= MSR_MTRR_VAR_FIRST &&
		index < MSR_MTRR_VAR_FIRST + 2 * KVMP_NR_VAR_MTRR) ||
	       kvmp_mtrr_fixed_index(index) >= 0 || index == MSR_MTRR_DEFTYPE;
}

static int kvmp_get_mtrr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	int i = kvmp_mtrr_fixed_index(index);

	if (i >= 0)
		*data = vcpu->msr.mtrr_fixed[i];
	else if (index == MSR_MTRR_DEFTYPE)
		*data = vcpu->msr.mtrr_deftype;
	else
		*data = vcpu->msr.mtrr_var[index - MSR_MTRR_VAR_FIRST] &
			~kvmp_reserved_gpa_bits(vcpu);
	return 0;
}

static int kvmp_set_mtrr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	int i = kvmp_mtrr_fixed_index(index), b;
	u64 reserved;

	if (i >= 0) {
		for (b = 0; b < 64; b += 8)
			if (!kvmp_mtrr_type_ok((data >> b) & 0xff))
				return 1;
		vcpu->msr.mtrr_fixed[i] = data;
		return 0;
	}
	if (index == MSR_MTRR_DEFTYPE) {
		if ((data & ~0xcffULL) || !kvmp_mtrr_type_ok(data & 0xff))
			return 1;
		vcpu->msr.mtrr_deftype = data;
		return 0;
	}
	reserved = kvmp_reserved_gpa_bits(vcpu);
	if (!(index & 1)) {		/* PhysBase: type, reserved 8-11 */
		if (!kvmp_mtrr_type_ok(data & 0xff))
			return 1;
		reserved |= 0xf00;
	} else {			/* PhysMask: valid bit 11 */
		reserved |= 0x7ff;
	}
	if (data & reserved)
		return 1;
	vcpu->msr.mtrr_var[index - MSR_MTRR_VAR_FIRST] = data;
	return 0;
}

static unsigned int kvmp_mce_banks(struct kvmp_vcpu *vcpu)
{
	return vcpu->msr.mcg_cap & 0xff;
}

/* KVM_X86_SETUP_MCE: the banks a VMM gives its guest (Linux's checks) */
int kvmp_setup_mce(struct kvmp_vcpu *vcpu, u64 mcg_cap)
{
	unsigned int banks = mcg_cap & 0xff, i;

	if (!banks || banks > KVMP_MCE_BANKS_MAX ||
	    (mcg_cap & ~(KVMP_MCE_CAP_SUPPORTED | 0xff | 0xff0000)))
		return -KVMP_EINVAL;
	vcpu->msr.mcg_cap = mcg_cap;
	if (mcg_cap & MCG_CTL_P)
		vcpu->msr.mcg_ctl = ~0ULL;
	for (i = 0; i < banks; i++)
		vcpu->msr.mce_banks[4 * i] = ~0ULL;
	if (kvmp_amd)	/* kvm_amd: bits 63:9 of MCG_CAP are reserved on AMD */
		vcpu->msr.mcg_cap &= 0x1ff;
	return 0;
}

/* the machine-check MSRs; 1 means #GP (or a refused KVM_SET_MSRS entry) */
static int kvmp_get_mce(struct kvmp_vcpu *vcpu, u32 index, u64 *data,
			bool host)
{
	u64 cap = vcpu->msr.mcg_cap;
	u32 i;

	switch (index) {
	case MSR_P5_MC_ADDR:
	case MSR_P5_MC_TYPE:
		*data = 0;
		return 0;
	case MSR_MCG_CAP:
		*data = cap;
		return 0;
	case MSR_MCG_CTL:
		if (!(cap & MCG_CTL_P) && !host)
			return 1;
		*data = vcpu->msr.mcg_ctl;
		return 0;
	case MSR_MCG_STATUS:
		*data = vcpu->msr.mcg_status;
		return 0;
	}
	if (index >= MSR_MC0_CTL2 && index < MSR_MC0_CTL2 + KVMP_MCE_BANKS_MAX) {
		i = index - MSR_MC0_CTL2;
		if (i >= kvmp_mce_banks(vcpu) || (!(cap & MCG_CMCI_P) && !host))
			return 1;
		*data = vcpu->msr.mci_ctl2[i];
		return 0;
	}
	i = index - MSR_MC0_CTL;
	if (i >= 4 * kvmp_mce_banks(vcpu))
		return 1;
	*data = vcpu->msr.mce_banks[i];
	return 0;
}

static int kvmp_set_mce(struct kvmp_vcpu *vcpu, u32 index, u64 data,
			bool host)
{
	u64 cap = vcpu->msr.mcg_cap;
	u32 i;

	switch (index) {
	case MSR_MCG_STATUS:
		vcpu->msr.mcg_status = data;
		return 0;
	case MSR_MCG_CTL:
		if (!(cap & MCG_CTL_P) && (data || !host))
			return 1;
		if (data != 0 && data != ~0ULL)
			return 1;
		vcpu->msr.mcg_ctl = data;
		return 0;
	}
	if (index >= MSR_MC0_CTL2 && index < MSR_MC0_CTL2 + KVMP_MCE_BANKS_MAX) {
		i = index - MSR_MC0_CTL2;
		if (i >= kvmp_mce_banks(vcpu))
			return 1;
		if (!(cap & MCG_CMCI_P) && (data || !host))
			return 1;
		if (data & ~((1ULL << 30) | 0x7fffULL))	/* CMCI_EN, threshold */
			return 1;
		vcpu->msr.mci_ctl2[i] = data;
		return 0;
	}
	i = index - MSR_MC0_CTL;
	if (i >= 4 * kvmp_mce_banks(vcpu))
		return 1;
	/* MCi_CTL: 0 or all ones; bit 10 (K8 GART erratum) and bit 0 may be clear */
	if (i % 4 == 0 && data && (data | (1ULL << 10) | 1) != ~0ULL)
		return 1;
	/* MCi_STATUS: the guest may only clear it, unless HWCR allows more */
	if (i % 4 == 1 && !host && data &&
	    !(vcpu->msr.hwcr & HWCR_MCSTATUSWREN))
		return 1;
	vcpu->msr.mce_banks[i] = data;
	return 0;
}

static bool kvmp_is_mce(u32 index)
{
	return index <= MSR_P5_MC_TYPE ||
	       (index >= MSR_MCG_CAP && index <= MSR_MCG_CTL) ||
	       (index >= MSR_MC0_CTL2 &&
		index < MSR_MC0_CTL2 + KVMP_MCE_BANKS_MAX) ||
	       (index >= MSR_MC0_CTL &&
		index < MSR_MC0_CTL + 4 * KVMP_MCE_BANKS_MAX);
}

/* the family and model the guest's CPUID gives, or -1 */
static int kvmp_guest_family_model(struct kvmp_vcpu *vcpu, int *model)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 1, 0);
	int family;

	if (!e)
		return -1;
	family = (e->eax >> 8) & 0xf;
	*model = (e->eax >> 4) & 0xf;
	if (family == 0xf)
		family += (e->eax >> 20) & 0xff;
	if (family >= 6)
		*model += ((e->eax >> 16) & 0xf) << 4;
	return family;
}

static int kvmp_do_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data,
			   bool host)
{
	int family, model;

	switch (index) {
	/* MSRs that exist on some CPU and read as zero in Linux KVM */
	case MSR_PLATFORM_ID:
	case MSR_EBL_CR_POWERON:
	case MSR_P6_PERFCTR0:
	case MSR_P6_PERFCTR1:
	case MSR_P6_EVNTSEL0:
	case MSR_P6_EVNTSEL1:
	case MSR_PERF_CTL:
	case MSR_DEBUGCTL:	/* no LBR virtualisation: the VMCB's zeros */
	case MSR_LBR_FIRST ... MSR_LBR_LAST:
	case MSR_TSC_DEADLINE:	/* no in-kernel local APIC */
	case MSR_RAPL_POWER_UNIT:
	case MSR_PKG_ENERGY:
	case MSR_DRAM_ENERGY:
	case MSR_PP0_ENERGY:
	case MSR_PP1_ENERGY:
	case MSR_K7_EVNTSEL0 ... MSR_K7_PERFCTR3:	/* no PMU is offered */
	case MSR_SYSCFG:
	case MSR_NB_CFG:
	case MSR_K8_INT_PENDING:
	case MSR_MMIO_CONF_BASE:
	case MSR_TSEG_ADDR:
	case MSR_TSEG_MASK:
	case MSR_DC_CFG:
	case MSR_TW_CFG:
	case MSR_BU_CFG2:
	case MSR_F15H_EX_CFG:
		*data = 0;
		return 0;
	case MSR_IA32_TSC:
		*data = kvmp_rdtsc() + kvmp_backend->get_tsc_offset(vcpu);
		return 0;
	case MSR_TSC_ADJUST:	/* readable whatever the CPUID, as in Linux */
		*data = vcpu->msr.tsc_adjust;
		return 0;
	case MSR_KVM_WALL_CLOCK:
		*data = vcpu->vm->kvm_wall_clock;
		return 0;
	case MSR_KVM_SYSTEM_TIME:
		*data = vcpu->msr.kvm_system_time;
		return 0;
	case MSR_IA32_APICBASE:
		*data = kvmp_apic_base(vcpu);
		return 0;
	case MSR_EBC_FREQUENCY_ID:	/* a core/bus ratio of 1 */
		*data = 1ULL << 24;
		return 0;
	case MSR_SMI_COUNT:
		*data = vcpu->msr.smi_count;
		return 0;
	case MSR_UCODE_REV:
		*data = vcpu->msr.ucode_rev;
		return 0;
	case MSR_SMBASE:
		if (!host)
			return 1;
		*data = vcpu->msr.smbase;
		return 0;
	case MSR_FSB_FREQ:
		*data = 3;
		return 0;
	case MSR_PLATFORM_INFO:	/* guests may read it (Linux's default) */
		*data = vcpu->msr.platform_info;
		return 0;
	case MSR_MTRRCAP:	/* WC, fixed ranges, KVMP_NR_VAR_MTRR ranges */
		*data = 0x500 | KVMP_NR_VAR_MTRR;
		return 0;
	case MSR_BBL_CR_CTL3:	/* Linux's plausible L2 setting */
		*data = 0xbe702111;
		return 0;
	case MSR_MISC_FEATURES:
		*data = vcpu->msr.misc_features;
		return 0;
	case MSR_PERF_STATUS:	/* Linux's fixed answer */
		*data = 1000ULL | (4ULL << 40);
		return 0;
	case MSR_IA32_MISC_ENABLE:
		*data = vcpu->misc_enable;
		return 0;
	case MSR_POWER_CTL:
		*data = vcpu->msr.power_ctl;
		return 0;
	case MSR_K7_HWCR:
		*data = vcpu->msr.hwcr;
		return 0;
	case MSR_K7_CLK_CTL:	/* Linux's ramp-up count for K7 */
		*data = 0x20000000;
		return 0;
	case MSR_VM_HSAVE_PA:
		*data = vcpu->msr.hsave_pa;
		return 0;
	}
	if (kvmp_amd) {		/* what only kvm_amd answers */
		switch (index) {
		case MSR_VM_CR:
			*data = vcpu->msr.vm_cr;
			return 0;
		case MSR_F15H_IC_CFG:
			family = kvmp_guest_family_model(vcpu, &model);
			if (family < 0)
				return 1;
			*data = family == 0x15 && model >= 2 && model < 0x20 ?
				0x1e : 0;
			return 0;
		case MSR_DE_CFG:
			*data = vcpu->msr.de_cfg;
			return 0;
		}
	}
	if (kvmp_is_mtrr(index))
		return kvmp_get_mtrr(vcpu, index, data);
	if (kvmp_is_mce(index))
		return kvmp_get_mce(vcpu, index, data, host);
	return kvmp_backend->get_msr(vcpu, index, data) ? 1 : 0;
}

/*
 * What Linux's kvm_set_apic_base refuses from anyone (KVM_SET_SREGS, the
 * VMM's and the guest's WRMSR): reserved bits, x2APIC without it in CPUID
 * or without the enable bit.
 */
bool kvmp_apic_base_valid(struct kvmp_vcpu *vcpu, u64 data)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 1, 0);
	u64 reserved = kvmp_reserved_gpa_bits(vcpu) | 0x2ff;

	if (!e || !(e->ecx & BIT(21)))		/* no x2APIC in CPUID */
		reserved |= APIC_BASE_X2APIC;
	return !(data & reserved) &&
	       (data & (APIC_BASE_X2APIC | APIC_BASE_ENABLE)) != APIC_BASE_X2APIC;
}

/* Linux's checks; there is no local APIC in the kernel to reconfigure */
static int kvmp_set_apic_base(struct kvmp_vcpu *vcpu, u64 data, bool host)
{
	u64 old = vcpu->apic_base;

	if (!kvmp_apic_base_valid(vcpu, data))
		return 1;
	if (!host) {
		/* x2APIC -> xAPIC and disabled -> x2APIC skip a step */
		if ((old & APIC_BASE_X2APIC) && !(data & APIC_BASE_X2APIC) &&
		    (data & APIC_BASE_ENABLE))
			return 1;
		if (!(old & APIC_BASE_ENABLE) && (data & APIC_BASE_X2APIC))
			return 1;
	}
	vcpu->apic_base = data;
	return 0;
}

static bool kvmp_guest_has_tsc_adjust(struct kvmp_vcpu *vcpu)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 7, 0);

	return e && (e->ebx & CPUID7_EBX_TSC_ADJUST);
}

/*
 * IA32_TSC and IA32_TSC_ADJUST move each other as on hardware when the guest
 * writes them: what one write adds to the TSC's offset is added to the other.
 * The VMM's writes set one alone, so it can restore both (Linux's rules).
 */
static void kvmp_set_tsc(struct kvmp_vcpu *vcpu, u64 data, bool host)
{
	u64 old = kvmp_backend->get_tsc_offset(vcpu);
	u64 offset = data - kvmp_rdtsc();

	if (!host)
		vcpu->msr.tsc_adjust += offset - old;
	kvmp_backend->set_tsc_offset(vcpu, offset);
}

static void kvmp_set_tsc_adjust(struct kvmp_vcpu *vcpu, u64 data, bool host)
{
	u64 offset = kvmp_backend->get_tsc_offset(vcpu);

	if (!kvmp_guest_has_tsc_adjust(vcpu))
		return;		/* dropped, no #GP (Linux) */
	if (!host)
		kvmp_backend->set_tsc_offset(vcpu, offset + data -
					     vcpu->msr.tsc_adjust);
	vcpu->msr.tsc_adjust = data;
}

static int kvmp_do_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data,
			   bool host)
{
	u64 changeable;

	switch (index) {
	/* writes Linux KVM accepts and drops (why: kvmp_do_get_msr) */
	case MSR_NB_CFG:
	case MSR_UCODE_WRITE:
	case MSR_PATCH_LOADER:
	case MSR_BU_CFG2:
	case MSR_DC_CFG:
	case MSR_TW_CFG:
	case MSR_F15H_EX_CFG:
	case MSR_VM_IGNNE:
	case MSR_DEBUGCTL:
	case MSR_TSC_DEADLINE:
	case MSR_P6_PERFCTR0 ... MSR_P6_PERFCTR1:
	case MSR_P6_EVNTSEL0 ... MSR_P6_EVNTSEL1:
	case MSR_K7_EVNTSEL0 ... MSR_K7_PERFCTR3:
		return 0;
	case MSR_IA32_TSC:
		kvmp_set_tsc(vcpu, data, host);
		return 0;
	case MSR_TSC_ADJUST:
		kvmp_set_tsc_adjust(vcpu, data, host);
		return 0;
	case MSR_KVM_WALL_CLOCK:
		/* stored only: kvmport offers no KVM clock in CPUID 0x40000001 */
		vcpu->vm->kvm_wall_clock = data;
		return 0;
	case MSR_KVM_SYSTEM_TIME:
		vcpu->msr.kvm_system_time = data;
		return 0;
	case MSR_UCODE_REV:
		if (host)
			vcpu->msr.ucode_rev = data;
		return 0;
	case MSR_IA32_APICBASE:
		return kvmp_set_apic_base(vcpu, data, host);
	case MSR_SMBASE:	/* only the VMM writes these three */
	case MSR_SMI_COUNT:
	case MSR_PLATFORM_INFO:
		if (!host)
			return 1;
		*(index == MSR_SMBASE ? &vcpu->msr.smbase :
		  index == MSR_SMI_COUNT ? &vcpu->msr.smi_count :
		  &vcpu->msr.platform_info) = data;
		return 0;
	case MSR_MISC_FEATURES:
		/*
		 * CPUID faulting (bit 0) is not implemented: refused rather than
		 * accepted and ignored (Linux takes it); docs/driver.md
		 */
		if (data)
			return 1;
		vcpu->msr.misc_features = 0;
		return 0;
	case MSR_IA32_MISC_ENABLE:
		if (!host) {
			/* BTS/PEBS unavailable are read-only, EMON is ignored */
			if ((vcpu->misc_enable ^ data) &
			    (MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL))
				return 1;
			data = (data & ~MISC_ENABLE_EMON) |
			       (vcpu->misc_enable & MISC_ENABLE_EMON);
		}
		vcpu->misc_enable = data;
		return 0;
	case MSR_POWER_CTL:
		vcpu->msr.power_ctl = data;
		return 0;
	case MSR_K7_HWCR:
		/* flush filter, IGNNE emulation and TLB cache bits are ignored */
		data &= ~(0x40ULL | 0x100ULL | 0x8ULL);
		if (data && data != HWCR_MCSTATUSWREN)
			return 1;
		vcpu->msr.hwcr = data;
		return 0;
	case MSR_MMIO_CONF_BASE:
		return data ? 1 : 0;
	case MSR_VM_CR:
		if (!kvmp_amd || (data & ~VM_CR_VALID))
			return 1;
		changeable = VM_CR_VALID;
		if (vcpu->msr.vm_cr & VM_CR_SVMDIS)
			changeable &= ~(VM_CR_LOCK | VM_CR_SVMDIS);
		vcpu->msr.vm_cr = (vcpu->msr.vm_cr & ~changeable) |
				  (data & changeable);
		return 0;
	case MSR_VM_HSAVE_PA:
		if (!kvmp_amd)		/* kvm_intel drops it */
			return 0;
		if (!host && ((data & (KVMP_PAGE_SIZE - 1)) ||
			      (data & kvmp_reserved_gpa_bits(vcpu))))
			return 1;
		vcpu->msr.hsave_pa = data & ~(u64)(KVMP_PAGE_SIZE - 1);
		return 0;
	case MSR_DE_CFG:
		if (!kvmp_amd || (data & ~DE_CFG_LFENCE_SERIALIZE))
			return 1;
		vcpu->msr.de_cfg = data;
		return 0;
	case MSR_PAT:	/* the backend keeps it; the rule is the same */
		if (!kvmp_pat_ok(data))
			return 1;
		break;
	}
	if (kvmp_is_mtrr(index))
		return kvmp_set_mtrr(vcpu, index, data);
	if (kvmp_is_mce(index))
		return kvmp_set_mce(vcpu, index, data, host);
	return kvmp_backend->set_msr(vcpu, index, data) ? 1 : 0;
}

int kvmp_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	return kvmp_do_get_msr(vcpu, index, data, false);
}

int kvmp_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	return kvmp_do_set_msr(vcpu, index, data, false);
}

int kvmp_host_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	return kvmp_do_get_msr(vcpu, index, data, true);
}

int kvmp_host_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	return kvmp_do_set_msr(vcpu, index, data, true);
}

/*
 * The guest's MOV to CR8, which both backends intercept.  The local APIC is
 * the VMM's (kvmport has none), and it learns the new priority from run->cr8
 * at the next exit; a lower one may unmask an interrupt it holds back, so
 * that exits at once with KVM_EXIT_SET_TPR, as Linux does without an
 * in-kernel APIC.  -1 is a reserved value (#GP); otherwise the backend moves
 * past the instruction and returns what this returns.
 */
int kvmp_guest_set_cr8(struct kvmp_vcpu *vcpu, u64 cr8)
{
	u8 old = vcpu->cr8;

	if (cr8 > 15)
		return -1;
	vcpu->cr8 = cr8;
	if (cr8 >= old)
		return KVMP_REENTER;
	vcpu->run->exit_reason = KVMP_EXIT_SET_TPR;
	return KVMP_TO_USER;
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
		if (kvmp_coalesce(vcpu->vm, pio->port, pio->size, &regs.rax, true)) {
			regs.rip = pio->next_rip;	/* batched: done */
			kvmp_backend->set_regs(vcpu, &regs);
			return KVMP_REENTER;
		}
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
	u64 count = pio->count, bytes, dst;
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	bool down;

	pio->pending = false;
	kvmp_backend->get_regs(vcpu, &regs);
	down = regs.rflags & KVMP_EFLAGS_DF;
	/*
	 * The VMM may have lowered RCX meanwhile (KVM_SET_REGS): only that many
	 * elements are done, as in Linux (its selftest userspace_io_test).
	 */
	if (pio->string && pio->rep &&
	    (regs.rcx & kvmp_size_mask(pio->addr_size)) < count)
		count = regs.rcx & kvmp_size_mask(pio->addr_size);
	bytes = count * pio->size;
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
			kvmp_reverse_elements(kvmp_pio_data(vcpu), count,
					      pio->size);
		if (bytes &&
		    kvmp_write_guest_virt(vcpu, &s, dst, kvmp_pio_data(vcpu), bytes))
			return -KVMP_EFAULT;
		regs.rdi = kvmp_addr_update(regs.rdi, down ? regs.rdi - bytes :
					    regs.rdi + bytes, pio->addr_size);
	} else {
		regs.rsi = kvmp_addr_update(regs.rsi, down ? regs.rsi - bytes :
					    regs.rsi + bytes, pio->addr_size);
	}
	if (pio->rep)
		regs.rcx = kvmp_addr_update(regs.rcx, regs.rcx - count,
					    pio->addr_size);
	/* more to do: leave RIP on the instruction so it runs again */
	if (!pio->rep || !(regs.rcx & kvmp_size_mask(pio->addr_size)))
		regs.rip = pio->next_rip;
	kvmp_backend->set_regs(vcpu, &regs);
	return 0;
}

int kvmp_cpu_mode(const struct kvmp_sregs *s)
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
 * The bytes at the guest's CS:RIP (up to KVMP_INSN_MAX_LEN, fewer when the
 * next page is not there), for the exits whose instruction the hardware does
 * not describe.  Returns how many were read.
 */
unsigned int kvmp_fetch_insn(struct kvmp_vcpu *vcpu, const struct kvmp_regs *regs,
			     const struct kvmp_sregs *s, u8 *code)
{
	u64 linear = s->cs.base + regs->rip;
	unsigned int avail;

	if (kvmp_cpu_mode(s) != 64)
		linear &= 0xffffffffULL;
	/* up to the end of the page first: the next may not exist */
	avail = KVMP_PAGE_SIZE - (linear & (KVMP_PAGE_SIZE - 1));
	if (avail > KVMP_INSN_MAX_LEN)
		avail = KVMP_INSN_MAX_LEN;
	if (kvmp_read_guest_virt(vcpu, s, linear, code, avail))
		return 0;
	if (avail < KVMP_INSN_MAX_LEN &&
	    !kvmp_read_guest_virt(vcpu, s, linear + avail, code + avail,
				  KVMP_INSN_MAX_LEN - avail))
		avail = KVMP_INSN_MAX_LEN;
	return avail;
}

static int kvmp_complete_mmio(struct kvmp_vcpu *vcpu);

/*
 * An MMIO exit for the decoded instruction's element at gpa; a write the
 * VMM batches (coalesced MMIO) goes into the ring and the instruction is
 * finished here instead (KVMP_REENTER).
 */
static int kvmp_mmio_exit(struct kvmp_vcpu *vcpu, u64 gpa, bool write, u64 value)
{
	struct kvmp_run *run = vcpu->run;
	struct kvmp_mmio *mmio = &vcpu->mmio;
	int r;

	mmio->pending = true;
	if (write && kvmp_coalesce(vcpu->vm, gpa, mmio->insn.mem_size, &value,
				   false)) {
		r = kvmp_complete_mmio(vcpu);
		return r < 0 ? r : KVMP_REENTER;
	}
	run->exit_reason = KVMP_EXIT_MMIO;
	run->mmio.phys_addr = gpa;
	run->mmio.len = mmio->insn.mem_size;
	run->mmio.is_write = write;
	kvmp_os_memset(run->mmio.data, 0, sizeof(run->mmio.data));
	if (write)
		kvmp_os_memcpy(run->mmio.data, &value, mmio->insn.mem_size);
	return KVMP_TO_USER;
}

/* a string instruction's linear address in seg at reg */
static u64 kvmp_string_addr(const struct kvmp_sregs *s, const struct kvmp_insn *in,
			    int seg, u64 reg)
{
	u64 a = kvmp_seg_base(s, seg) + (reg & kvmp_size_mask(in->addr_size));

	return kvmp_cpu_mode(s) == 64 ? a : a & 0xffffffffULL;
}

/*
 * MOVS, STOS or LODS touching MMIO: one element per exit, as Linux's
 * emulator does.  The completion steps rSI, rDI and rCX and leaves RIP on
 * the instruction while REP has more to do: the guest runs it again, and
 * the elements that are RAM go at hardware speed.
 */
static int kvmp_exit_mmio_string(struct kvmp_vcpu *vcpu, struct kvmp_regs *regs,
				 const struct kvmp_sregs *s, u64 gpa)
{
	struct kvmp_mmio *mmio = &vcpu->mmio;
	struct kvmp_insn *in = &mmio->insn;
	u64 src, dst, src_gpa, dst_gpa, v = 0;
	bool src_mmio, dst_mmio;

	if (in->rep && !(regs->rcx & kvmp_size_mask(in->addr_size))) {
		regs->rip = mmio->next_rip;	/* REP with rCX = 0 does nothing */
		kvmp_backend->set_regs(vcpu, regs);
		return KVMP_REENTER;
	}
	if (in->string == KVMP_STR_STOS)
		return kvmp_mmio_exit(vcpu, gpa, true, regs->rax);
	if (in->string == KVMP_STR_LODS)
		return kvmp_mmio_exit(vcpu, gpa, false, 0);

	/* MOVS: the fault says one side is MMIO; the page walk says which */
	src = kvmp_string_addr(s, in, in->seg, regs->rsi);
	dst = kvmp_string_addr(s, in, KVMP_SEG_ES, regs->rdi);
	if (kvmp_gva_to_gpa(vcpu, s, src, &src_gpa) ||
	    kvmp_gva_to_gpa(vcpu, s, dst, &dst_gpa)) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, gpa,
				    regs->rip);
		return KVMP_TO_USER;
	}
	src_mmio = kvmp_gpa_is_mmio(vcpu->vm, src_gpa, false);
	dst_mmio = kvmp_gpa_is_mmio(vcpu->vm, dst_gpa, true);
	mmio->movs_dst = dst_gpa;
	mmio->movs_dst_mmio = dst_mmio;
	mmio->movs_read = src_mmio;
	if (src_mmio)		/* read it first; the write follows */
		return kvmp_mmio_exit(vcpu, src_gpa, false, 0);
	if (!dst_mmio)		/* a slot came meanwhile: just run it again */
		return KVMP_REENTER;
	if (kvmp_read_guest_virt(vcpu, s, src, &v, in->mem_size)) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, src,
				    regs->rip);
		return KVMP_TO_USER;
	}
	return kvmp_mmio_exit(vcpu, dst_gpa, true, v);
}

/*
 * A guest access to a guest-physical address no slot backs.  insn_bytes are
 * the hardware's (decode assists) or NULL: then fetch them from CS:RIP.
 */
int kvmp_exit_mmio(struct kvmp_vcpu *vcpu, u64 gpa, const u8 *insn_bytes,
		   unsigned int insn_len)
{
	struct kvmp_mmio *mmio = &vcpu->mmio;
	u8 code[KVMP_INSN_MAX_LEN];
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	unsigned int avail;
	int n;

	kvmp_backend->get_regs(vcpu, &regs);
	kvmp_backend->get_sregs(vcpu, &s);
	if (insn_bytes && insn_len) {
		/* a hardware length, yet only KVMP_INSN_MAX_LEN bytes fit */
		avail = insn_len < KVMP_INSN_MAX_LEN ? insn_len : KVMP_INSN_MAX_LEN;
		kvmp_os_memcpy(code, insn_bytes, avail);
	} else {
		avail = kvmp_fetch_insn(vcpu, &regs, &s, code);
	}
	n = kvmp_decode_mov(code, avail, kvmp_cpu_mode(&s), &mmio->insn);
	if (n < 0) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, gpa,
				    regs.rip);
		return KVMP_TO_USER;
	}
	mmio->next_rip = regs.rip + n;
	mmio->movs_read = false;
	if (mmio->insn.string)
		return kvmp_exit_mmio_string(vcpu, &regs, &s, gpa);
	if (mmio->insn.kind == KVMP_INSN_STORE)
		return kvmp_mmio_exit(vcpu, gpa, true,
				      kvmp_insn_store_value(&mmio->insn,
							    *kvmp_gpr(&regs, mmio->insn.reg)));
	return kvmp_mmio_exit(vcpu, gpa, false, 0);
}

/*
 * The VMM answered an MMIO exit.  Returns 1 when it must answer another
 * first (MOVS from MMIO to MMIO: the write after the read), or an errno.
 */
static int kvmp_complete_mmio(struct kvmp_vcpu *vcpu)
{
	struct kvmp_mmio *mmio = &vcpu->mmio;
	struct kvmp_insn *in = &mmio->insn;
	u64 data = 0, *reg, step, amask = kvmp_size_mask(in->addr_size);
	struct kvmp_regs regs;
	struct kvmp_sregs s;

	mmio->pending = false;
	kvmp_backend->get_regs(vcpu, &regs);
	kvmp_os_memcpy(&data, vcpu->run->mmio.data, in->mem_size);
	if (!in->string) {
		if (in->kind == KVMP_INSN_LOAD) {
			reg = kvmp_gpr(&regs, in->reg);
			*reg = kvmp_insn_load_result(in, *reg, data);
		}
		regs.rip = mmio->next_rip;
		kvmp_backend->set_regs(vcpu, &regs);
		return 0;
	}
	if (in->string == KVMP_STR_MOVS && mmio->movs_read) {
		mmio->movs_read = false;
		if (mmio->movs_dst_mmio)	/* 1: it exits; or it was batched */
			return kvmp_mmio_exit(vcpu, mmio->movs_dst, true, data) ==
			       KVMP_TO_USER;
		kvmp_backend->get_sregs(vcpu, &s);
		if (kvmp_write_guest_virt(vcpu, &s,
					  kvmp_string_addr(&s, in, KVMP_SEG_ES, regs.rdi),
					  &data, in->mem_size))
			return -KVMP_EFAULT;
	}
	if (in->string == KVMP_STR_LODS)
		regs.rax = kvmp_insn_load_result(in, regs.rax, data);
	step = regs.rflags & KVMP_EFLAGS_DF ? -(u64)in->mem_size : in->mem_size;
	if (in->string != KVMP_STR_STOS)
		regs.rsi = kvmp_addr_update(regs.rsi, regs.rsi + step, in->addr_size);
	if (in->string != KVMP_STR_LODS)
		regs.rdi = kvmp_addr_update(regs.rdi, regs.rdi + step, in->addr_size);
	if (in->rep)
		regs.rcx = kvmp_addr_update(regs.rcx, regs.rcx - 1, in->addr_size);
	if (!in->rep || !(regs.rcx & amask))
		regs.rip = mmio->next_rip;
	kvmp_backend->set_regs(vcpu, &regs);
	return 0;
}

/*
 * RDPMC, answered as Linux's KVM answers a guest whose counters it never
 * programmed (kvmport gives guests no PMU): #GP (-KVMP_EINVAL) from CPL > 0
 * in protected mode without CR4.PCE, or for a counter the guest does not
 * have -- AMD's four (six with PerfCtrCore in the VMM's CPUID), or on Intel
 * those the VMM's CPUID leaf 0xa gives (none without it); otherwise 0.
 * Never the host's counters.
 */
#define KVMP_CR4_PCE	(1ULL << 8)

int kvmp_emulate_rdpmc(struct kvmp_vcpu *vcpu, u32 ecx, unsigned int cpl,
		       u64 cr0, u64 cr4, u64 *value)
{
	const struct kvmp_cpuid_entry2 *e;
	u32 idx = ecx & ~(3U << 30), counters;

	if (cpl && (cr0 & KVMP_CR0_PE) && !(cr4 & KVMP_CR4_PCE))
		return -KVMP_EINVAL;
	if (!kvmp_amd) {	/* Intel's PMU: CPUID 0xa's counters */
		e = kvmp_find_cpuid(vcpu, 0xa, 0);
		if (!e || !(e->eax & 0xff))
			counters = 0;
		else if (ecx & (1U << 30))	/* a fixed counter */
			counters = (e->eax & 0xff) > 1 ? e->edx & 0x1f : 0;
		else
			counters = (e->eax >> 8) & 0xff;
	} else {
		e = kvmp_find_cpuid(vcpu, 0x80000001, 0);
		counters = e && (e->ecx & (1U << 23)) ? 6 : 4;
	}
	if (idx >= counters)
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
	run->cr8 = vcpu->cr8;
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
	struct kvmp_event e;

	/* an NMI the VMM restored as injected goes in once the exception did */
	if (vcpu->nmi_injected) {
		be->get_event(vcpu, &e);
		if (e.type == KVMP_EVENT_NONE) {
			be->inject_nmi(vcpu);
			vcpu->nmi_injected = false;
		}
	}
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

#define MSR_PRED_CMD	0x49
#define PRED_CMD_IBPB	1

/*
 * Branch predictions one VM trained must not steer another's: a barrier when
 * a CPU starts running a VCPU of another VM than the one it last ran (as
 * Linux's KVM; the RSB is filled at every exit, in the entry code).  The
 * backend keeps *cpu_last_vm per CPU; preemption off.
 */
void kvmp_spec_vm_switch(u64 *cpu_last_vm, const struct kvmp_vm *vm)
{
	if (*cpu_last_vm == vm->id)
		return;
	*cpu_last_vm = vm->id;
	if (kvmp_host_ibpb)
		kvmp_wrmsr(MSR_PRED_CMD, PRED_CMD_IBPB);
}

int kvmp_vcpu_run(struct kvmp_vcpu *vcpu)
{
	struct kvmp_run *run = vcpu->run;
	int r = 0;

	vcpu->run_count++;
	/* the task priority of the VMM's local APIC (Linux: before the I/O completes) */
	if (run->cr8 > 15) {
		r = -KVMP_EINVAL;
		goto out;
	}
	vcpu->cr8 = run->cr8;
	/* first finish what the VMM answered (as Linux: before immediate_exit) */
	if (vcpu->pio.pending) {
		r = kvmp_complete_pio(vcpu);
		if (r)
			goto out;
	}
	if (vcpu->mmio.pending) {
		r = kvmp_complete_mmio(vcpu);
		if (r) {
			r = r > 0 ? 0 : r;	/* > 0: another MMIO exit is set */
			goto out;
		}
	}

	for (;;) {
		/*
		 * As Linux: immediate_exit leaves exit_reason as it was (a VMM
		 * finishing an I/O with it reads that exit again); a signal
		 * says KVM_EXIT_INTR.
		 */
		if (run->immediate_exit) {
			r = -KVMP_EINTR;
			break;
		}
		if (kvmp_os_signal_pending()) {
			run->exit_reason = KVMP_EXIT_INTR;
			r = -KVMP_EINTR;
			break;
		}
		kvmp_os_cond_resched();
		kvmp_inject_pending(vcpu);
		vcpu->entered = true;
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
