// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The guest's x87/SSE/AVX state, for every backend: the XSAVE area the core
 * keeps per VCPU, its reset value, KVM_GET/SET_FPU, and the switch around a
 * guest entry.  Neither VMRUN nor VM entry touches these registers or XCR0.
 */
#include "kvmp_core.h"

/* XSAVE_BV in the XSAVE header: which components the area holds */
#define XSAVE_HEADER_BV		512
#define XFEATURES_FP_SSE	(KVMP_XFEATURE_FP | KVMP_XFEATURE_SSE)

/* FCW 0x37f, MXCSR 0x1f80: FNINIT and the SSE reset value */
void kvmp_fpu_reset(struct kvmp_vcpu *vcpu)
{
	u8 *x = vcpu->fpu;

	kvmp_os_memset(x, 0, KVMP_XSAVE_AREA_MAX);
	x[0] = 0x7f;
	x[1] = 0x03;
	x[24] = 0x80;
	x[25] = 0x1f;
}

static u64 *kvmp_xsave_bv(struct kvmp_vcpu *vcpu)
{
	return (u64 *)(vcpu->fpu + XSAVE_HEADER_BV);
}

/*
 * struct kvmp_fpu is the FXSAVE image rearranged.  In an XSAVE area a
 * component whose XSAVE_BV bit is clear is in its reset state, whatever the
 * bytes say (MXCSR is always valid).
 */
void kvmp_fpu_get(struct kvmp_vcpu *vcpu, struct kvmp_fpu *f)
{
	const u8 *x = vcpu->fpu;
	u64 bv = kvmp_xcr0_supported ? *kvmp_xsave_bv(vcpu) : XFEATURES_FP_SSE;
	int i;

	kvmp_os_memset(f, 0, sizeof(*f));
	kvmp_os_memcpy(&f->mxcsr, x + 24, 4);
	if (!(bv & KVMP_XFEATURE_FP)) {
		f->fcw = 0x37f;
	} else {
		kvmp_os_memcpy(&f->fcw, x + 0, 2);
		kvmp_os_memcpy(&f->fsw, x + 2, 2);
		f->ftwx = x[4];
		kvmp_os_memcpy(&f->last_opcode, x + 6, 2);
		kvmp_os_memcpy(&f->last_ip, x + 8, 8);
		kvmp_os_memcpy(&f->last_dp, x + 16, 8);
		for (i = 0; i < 8; i++)
			kvmp_os_memcpy(f->fpr[i], x + 32 + 16 * i, 16);
	}
	if (bv & KVMP_XFEATURE_SSE)
		kvmp_os_memcpy(f->xmm, x + 160, sizeof(f->xmm));
}

/*
 * MXCSR is not taken, as in Linux's KVM_SET_FPU: a reserved bit in it would
 * make the kernel's own XRSTOR fault at the next entry.
 */
void kvmp_fpu_set(struct kvmp_vcpu *vcpu, const struct kvmp_fpu *f)
{
	u8 *x = vcpu->fpu;
	int i;

	kvmp_os_memcpy(x + 0, &f->fcw, 2);
	kvmp_os_memcpy(x + 2, &f->fsw, 2);
	x[4] = f->ftwx;
	kvmp_os_memcpy(x + 6, &f->last_opcode, 2);
	kvmp_os_memcpy(x + 8, &f->last_ip, 8);
	kvmp_os_memcpy(x + 16, &f->last_dp, 8);
	for (i = 0; i < 8; i++)
		kvmp_os_memcpy(x + 32 + 16 * i, f->fpr[i], 16);
	kvmp_os_memcpy(x + 160, f->xmm, sizeof(f->xmm));
	if (kvmp_xcr0_supported)	/* load what was written, keep AVX */
		*kvmp_xsave_bv(vcpu) |= XFEATURES_FP_SSE;
}

static void kvmp_xsetbv(u64 xcr0)
{
	asm volatile("xsetbv" : : "c"(0), "a"((u32)xcr0), "d"((u32)(xcr0 >> 32))
		     : "memory");
}

/*
 * The host's FPU registers are saved (kvmp_os_fpu_begin); load the guest's.
 * XRSTOR under the host's XCR0 with every component guests may use, then the
 * guest's XCR0.  Interrupts are off.
 */
void kvmp_fpu_load_guest(struct kvmp_vcpu *vcpu)
{
	u64 rfbm = kvmp_xcr0_supported;

	if (!rfbm) {
		asm volatile("fxrstor64 %0" : : "m"(*(u8 (*)[512])vcpu->fpu));
		return;
	}
	asm volatile("xrstor64 %0"
		     : : "m"(*(u8 (*)[KVMP_XSAVE_AREA_MAX])vcpu->fpu),
		     "a"((u32)rfbm), "d"((u32)(rfbm >> 32)));
	if (vcpu->xcr0 != kvmp_host_xcr0)
		kvmp_xsetbv(vcpu->xcr0);
}

void kvmp_fpu_save_guest(struct kvmp_vcpu *vcpu)
{
	u64 rfbm = kvmp_xcr0_supported, xcr0;

	if (!rfbm) {
		asm volatile("fxsave64 %0" : "=m"(*(u8 (*)[512])vcpu->fpu));
		return;
	}
	/*
	 * XSETBV is intercepted, so XCR0 is still what we loaded -- unless an
	 * emulated CPU ignored the intercept (seen under QEMU TCG): then the
	 * guest changed it and the new value is the guest's.
	 */
	xcr0 = kvmp_xgetbv(0);
	vcpu->xcr0 = xcr0;
	if (xcr0 != kvmp_host_xcr0)
		kvmp_xsetbv(kvmp_host_xcr0);
	asm volatile("xsave64 %0"
		     : "=m"(*(u8 (*)[KVMP_XSAVE_AREA_MAX])vcpu->fpu)
		     : "a"((u32)rfbm), "d"((u32)(rfbm >> 32)) : "memory");
}

/* --- KVM_GET/SET_XSAVE --------------------------------------------------- */
/* the standard (non-compacted) XSAVE layout, as KVM_GET/SET_XSAVE use it */
#define XSAVE_FP_END		160	/* x87: bytes 0-159, MXCSR among them */
#define XSAVE_MXCSR		24
#define XSAVE_SSE_END		416
#define XSAVE_HEADER_END	576
#define XSAVE_YMM		576	/* architectural in the standard format */
#define XSAVE_YMM_SIZE		256
/* the components that hold MXCSR: checked on SET; reported only with SSE/AVX */
#define XFEATURES_MXCSR		(XFEATURES_FP_SSE | KVMP_XFEATURE_YMM)
#define XFEATURES_MXCSR_GET	(KVMP_XFEATURE_SSE | KVMP_XFEATURE_YMM)

/*
 * The components KVM_GET_XSAVE shows, as Linux 6.1's: x87, SSE and what the
 * VMM's CPUID 0xd.0 offers.  KVM_SET_XSAVE takes every component guests may
 * use (kvmp_xcr0_supported), as Linux takes KVM's supported XCR0.
 */
static u64 kvmp_xsave_user_features(struct kvmp_vcpu *vcpu)
{
	struct kvmp_cpuid_entry2 *e = kvmp_find_cpuid(vcpu, 0xd, 0);

	return XFEATURES_FP_SSE | (e ? (((u64)e->edx << 32) | e->eax) &
				   kvmp_xcr0_supported : 0);
}

/*
 * Components not in XSTATE_BV are reported in their reset state, as Linux
 * does; the software-reserved bytes 464-511 stay zero (Linux puts its
 * signal-frame description there).
 */
void kvmp_fpu_get_xsave(struct kvmp_vcpu *vcpu, u8 *region)
{
	const u8 *x = vcpu->fpu;
	u64 bv;

	kvmp_os_memset(region, 0, 4096);
	if (!kvmp_xcr0_supported) {
		kvmp_os_memcpy(region, x, 512);
		bv = XFEATURES_FP_SSE;
		kvmp_os_memcpy(region + XSAVE_HEADER_BV, &bv, 8);
		return;
	}
	bv = *kvmp_xsave_bv(vcpu) & kvmp_xsave_user_features(vcpu);
	if (bv & KVMP_XFEATURE_FP) {
		kvmp_os_memcpy(region, x, XSAVE_MXCSR);
		kvmp_os_memcpy(region + 32, x + 32, XSAVE_FP_END - 32);
	} else {
		region[0] = 0x7f;
		region[1] = 0x03;
	}
	if (bv & XFEATURES_MXCSR_GET) {
		kvmp_os_memcpy(region + XSAVE_MXCSR, x + XSAVE_MXCSR, 8);
	} else {
		region[XSAVE_MXCSR] = 0x80;
		region[XSAVE_MXCSR + 1] = 0x1f;
		kvmp_os_memcpy(region + XSAVE_MXCSR + 4, &kvmp_mxcsr_mask, 4);
	}
	if (bv & KVMP_XFEATURE_SSE)
		kvmp_os_memcpy(region + XSAVE_FP_END, x + XSAVE_FP_END,
			       XSAVE_SSE_END - XSAVE_FP_END);
	kvmp_os_memcpy(region + XSAVE_HEADER_BV, &bv, 8);
	if (bv & KVMP_XFEATURE_YMM)
		kvmp_os_memcpy(region + XSAVE_YMM, x + XSAVE_YMM, XSAVE_YMM_SIZE);
}

/*
 * Linux's checks: XSTATE_BV only with components the VMM may set, no
 * compacted format, a zero header otherwise, no reserved MXCSR bit (it
 * would make the XRSTOR before the next entry fault).  A component outside
 * XSTATE_BV is left as it is and goes to its reset state.
 */
int kvmp_fpu_set_xsave(struct kvmp_vcpu *vcpu, const u8 *region)
{
	u8 *x = vcpu->fpu;
	u64 bv, hdr[8];
	u32 mxcsr;
	int i;

	kvmp_os_memcpy(hdr, region + XSAVE_HEADER_BV, sizeof(hdr));
	kvmp_os_memcpy(&mxcsr, region + XSAVE_MXCSR, 4);
	bv = hdr[0];
	if (!kvmp_xcr0_supported) {
		if ((bv & ~XFEATURES_FP_SSE) || (mxcsr & ~kvmp_mxcsr_mask))
			return -KVMP_EINVAL;
		kvmp_os_memcpy(x, region, 512);
		return 0;
	}
	if (bv & ~kvmp_xcr0_supported)
		return -KVMP_EINVAL;
	for (i = 1; i < 8; i++)		/* XCOMP_BV and the reserved words */
		if (hdr[i])
			return -KVMP_EINVAL;
	if ((bv & XFEATURES_MXCSR) && (mxcsr & ~kvmp_mxcsr_mask))
		return -KVMP_EINVAL;
	if ((bv & XFEATURES_MXCSR) && !(bv & KVMP_XFEATURE_FP))
		kvmp_os_memcpy(x + XSAVE_MXCSR, region + XSAVE_MXCSR, 8);
	if (bv & KVMP_XFEATURE_FP)
		kvmp_os_memcpy(x, region, XSAVE_FP_END);
	if (bv & KVMP_XFEATURE_SSE)
		kvmp_os_memcpy(x + XSAVE_FP_END, region + XSAVE_FP_END,
			       XSAVE_SSE_END - XSAVE_FP_END);
	if (bv & KVMP_XFEATURE_YMM)
		kvmp_os_memcpy(x + XSAVE_YMM, region + XSAVE_YMM, XSAVE_YMM_SIZE);
	*kvmp_xsave_bv(vcpu) = bv;
	return 0;
}
