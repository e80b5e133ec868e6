// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Checks of guest state a VMM hands in, made once for every backend: what
 * Linux's KVM_SET_SREGS refuses with EINVAL (kvm_is_valid_sregs, its CR0
 * and CR4 rules, the APIC base) is refused here before a backend stores it.
 */
#include "kvmp_core.h"

/* CR4 bits Linux knows; the rest are reserved (Linux's CR4_RESERVED_BITS) */
#define CR4_UMIP	(1ULL << 11)
#define CR4_LA57	(1ULL << 12)
#define CR4_VMXE	(1ULL << 13)
#define CR4_FSGSBASE	(1ULL << 16)
#define CR4_PCIDE	(1ULL << 17)
#define CR4_SMEP	(1ULL << 20)
#define CR4_SMAP	(1ULL << 21)
#define CR4_PKE		(1ULL << 22)
#define CR4_KNOWN	(0x7ffULL | CR4_UMIP | CR4_LA57 | CR4_VMXE | \
			 CR4_FSGSBASE | CR4_PCIDE | KVMP_CR4_OSXSAVE | \
			 CR4_SMEP | CR4_SMAP | CR4_PKE)


/* which CPUID feature bit lets a guest set which CR4 bit */
static const struct {
	u32 leaf;
	u8 reg;		/* 1 EBX, 2 ECX */
	u8 bit;
	u64 cr4;
} kvmp_cr4_features[] = {
	{ 1, 2, 26, KVMP_CR4_OSXSAVE },
	{ 1, 2, 5, CR4_VMXE },
	{ 1, 2, 17, CR4_PCIDE },
	{ 7, 1, 0, CR4_FSGSBASE },
	{ 7, 1, 7, CR4_SMEP },
	{ 7, 1, 20, CR4_SMAP },
	{ 7, 2, 2, CR4_UMIP },
	{ 7, 2, 3, CR4_PKE },
	{ 7, 2, 16, CR4_LA57 },
};

static bool kvmp_feature_bit(u32 ebx, u32 ecx, u8 reg, u8 bit)
{
	return ((reg == 1 ? ebx : ecx) >> bit) & 1;
}

/*
 * CR4 bits for features the host CPU lacks, or (from the VMM's CPUID, once
 * it set one, as Linux computes cr4_guest_rsvd_bits) the guest lacks.
 * PKE is never allowed: kvmport does not switch PKRU, so a guest with
 * CR4.PKE could change the VMM thread's protection keys.  Nor is VMXE:
 * kvmport offers no nested virtualization (kvm_intel does, with nested=1).
 */
/* CR4 bits for features the host CPU lacks: fixed, so found once */
static u64 kvmp_host_cr4_rsvd;

void kvmp_check_init(void)
{
	u32 max, a, b, c, d;
	unsigned int i;

	kvmp_host_cr4_rsvd = 0;
	kvmp_cpuid(0, 0, &max, &b, &c, &d);
	for (i = 0; i < ARRAY_SIZE(kvmp_cr4_features); i++) {
		a = b = c = d = 0;
		if (kvmp_cr4_features[i].leaf <= max)
			kvmp_cpuid(kvmp_cr4_features[i].leaf, 0, &a, &b, &c, &d);
		if (!kvmp_feature_bit(b, c, kvmp_cr4_features[i].reg,
				      kvmp_cr4_features[i].bit))
			kvmp_host_cr4_rsvd |= kvmp_cr4_features[i].cr4;
	}
}

/* every guest CR4 write checks against this: no host CPUID here */
static u64 kvmp_cr4_reserved(struct kvmp_vcpu *vcpu)
{
	u64 rsvd = ~CR4_KNOWN | CR4_PKE | CR4_VMXE | kvmp_host_cr4_rsvd;
	const struct kvmp_cpuid_entry2 *e;
	unsigned int i;

	/* OSXSAVE only where the host switches XSAVE state (its OS turned it on) */
	if (!kvmp_xcr0_supported)
		rsvd |= KVMP_CR4_OSXSAVE;
	for (i = 0; vcpu->cpuid_nent && i < ARRAY_SIZE(kvmp_cr4_features); i++) {
		e = kvmp_find_cpuid(vcpu, kvmp_cr4_features[i].leaf, 0);
		if (!e || !kvmp_feature_bit(e->ebx, e->ecx,
					    kvmp_cr4_features[i].reg,
					    kvmp_cr4_features[i].bit))
			rsvd |= kvmp_cr4_features[i].cr4;
	}
	return rsvd;
}

bool kvmp_is_valid_cr0(u64 cr0)
{
	if (cr0 >> 32)
		return false;
	if ((cr0 & KVMP_CR0_NW) && !(cr0 & KVMP_CR0_CD))
		return false;
	return !((cr0 & KVMP_CR0_PG) && !(cr0 & KVMP_CR0_PE));
}

bool kvmp_is_valid_cr4(struct kvmp_vcpu *vcpu, u64 cr4)
{
	return !(cr4 & kvmp_cr4_reserved(vcpu));
}

/*
 * The VMM's KVM_SET_SREGS: 0, or -KVMP_EINVAL for a state Linux refuses.
 * The core calls it before the backend's set_sregs.  EFER bits outside
 * SCE/LME/LMA/NXE are refused too (Linux takes them and fails the entry).
 */
int kvmp_check_sregs(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s)
{
	if ((s->efer & KVMP_EFER_LME) && (s->cr0 & KVMP_CR0_PG)) {
		/* 64-bit paging: PAE and LMA on, CR3 within MAXPHYADDR */
		if (!(s->cr4 & KVMP_CR4_PAE) || !(s->efer & KVMP_EFER_LMA))
			return -KVMP_EINVAL;
		if (s->cr3 & kvmp_reserved_gpa_bits(vcpu))
			return -KVMP_EINVAL;
	} else if ((s->efer & KVMP_EFER_LMA) || s->cs.l) {
		return -KVMP_EINVAL;
	}
	if (!kvmp_is_valid_cr4(vcpu, s->cr4) || !kvmp_is_valid_cr0(s->cr0))
		return -KVMP_EINVAL;
	if (s->efer & ~KVMP_EFER_GUEST_BITS)
		return -KVMP_EINVAL;

	/* as Linux's kvm_set_apic_base for a host-initiated write */
	if (!kvmp_apic_base_valid(vcpu, s->apic_base))
		return -KVMP_EINVAL;
	return 0;
}

/*
 * The guest's own MOV to CR0, as Linux's kvm_set_cr0: 0, or -KVMP_EINVAL for
 * a #GP.  *cr0 gets ET (hardwired); turning paging on or off in long mode
 * sets or clears EFER.LMA in *efer, as the CPU would.  cs_l: the guest runs
 * 64-bit code.  The caller stores both and flushes the guest's TLB when PG
 * changed.
 */
int kvmp_guest_set_cr0(struct kvmp_vcpu *vcpu, u64 old, u64 *cr0, u64 cr4,
		       u64 *efer, bool cs_l)
{
	*cr0 |= KVMP_CR0_ET;
	if (!kvmp_is_valid_cr0(*cr0))
		return -KVMP_EINVAL;
	if (!(old & KVMP_CR0_PG) && (*cr0 & KVMP_CR0_PG) &&
	    (*efer & KVMP_EFER_LME)) {
		if (!(cr4 & KVMP_CR4_PAE) || cs_l)
			return -KVMP_EINVAL;
		*efer |= KVMP_EFER_LMA;
	}
	if ((old & KVMP_CR0_PG) && !(*cr0 & KVMP_CR0_PG)) {
		if ((*efer & KVMP_EFER_LMA) && cs_l)
			return -KVMP_EINVAL;	/* not from 64-bit code */
		*efer &= ~KVMP_EFER_LMA;
	}
	return 0;
}

/* the guest's own MOV to CR4, as Linux's kvm_set_cr4: 0 or -KVMP_EINVAL */
int kvmp_guest_set_cr4(struct kvmp_vcpu *vcpu, u64 cr4, u64 efer)
{
	if (!kvmp_is_valid_cr4(vcpu, cr4))
		return -KVMP_EINVAL;
	if (!(cr4 & KVMP_CR4_PAE) && (efer & KVMP_EFER_LMA))
		return -KVMP_EINVAL;	/* long mode needs PAE */
	return 0;
}
