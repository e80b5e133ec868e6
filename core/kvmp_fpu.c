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
