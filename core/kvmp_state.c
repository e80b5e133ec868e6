// SPDX-License-Identifier: GPL-2.0
/*
 * The VCPU state a VMM saves and restores beyond registers (savevm, loadvm,
 * migration): KVM_GET/SET_VCPU_EVENTS, DEBUGREGS, XSAVE and XCRS, with the
 * checks and errnos of Linux's KVM (6.1) for a VM without an in-kernel
 * irqchip and without KVM_CAP_EXCEPTION_PAYLOAD.  The backends keep what
 * lives in their VMCB or VMCS (kvmp_backend.h); the policy is here.
 */
#include "kvmp_backend.h"

#define NMI_VECTOR	2
/* what KVM_SET_VCPU_EVENTS knows; PAYLOAD and TRIPLE_FAULT need a VM cap */
#define EVENTS_KNOWN	(KVMP_VCPUEVENT_VALID_NMI_PENDING |		\
			 KVMP_VCPUEVENT_VALID_SIPI_VECTOR |		\
			 KVMP_VCPUEVENT_VALID_SHADOW |			\
			 KVMP_VCPUEVENT_VALID_SMM |			\
			 KVMP_VCPUEVENT_VALID_PAYLOAD |			\
			 KVMP_VCPUEVENT_VALID_TRIPLE_FAULT)

static void kvmp_get_vcpu_events(struct kvmp_vcpu *vcpu,
				 struct kvmp_vcpu_events *ev)
{
	const struct kvmp_backend *be = kvmp_backend;
	struct kvmp_event e;

	be->get_event(vcpu, &e);
	if (e.type == KVMP_EVENT_EXCEPTION)
		vcpu->last_exception = e;
	if (vcpu->pending_irq >= 0)
		vcpu->last_irq = vcpu->pending_irq;

	kvmp_os_memset(ev, 0, sizeof(*ev));
	/* as Linux: the last exception's vector and error code stay visible */
	ev->exception.injected = e.type == KVMP_EVENT_EXCEPTION;
	ev->exception.nr = vcpu->last_exception.vector;
	ev->exception.has_error_code = vcpu->last_exception.has_error;
	ev->exception.error_code = vcpu->last_exception.error;
	ev->interrupt.injected = vcpu->pending_irq >= 0;
	ev->interrupt.nr = vcpu->last_irq;
	ev->interrupt.shadow = be->get_interrupt_shadow(vcpu);
	ev->nmi.injected = e.type == KVMP_EVENT_NMI || vcpu->nmi_injected;
	ev->nmi.pending = vcpu->pending_nmi;
	ev->nmi.masked = be->get_nmi_mask(vcpu);
	/* no SMM and no in-kernel APIC: the SMM fields are all 0 */
	ev->flags = KVMP_VCPUEVENT_VALID_NMI_PENDING |
		    KVMP_VCPUEVENT_VALID_SHADOW | KVMP_VCPUEVENT_VALID_SMM;
}

/*
 * Linux's order: unknown flags, PAYLOAD without the capability and a bad
 * exception vector are refused before anything changes; a pending exception
 * is dropped without PAYLOAD (it is reported as injected); TRIPLE_FAULT
 * without its capability is refused after the rest was taken.
 */
static int kvmp_set_vcpu_events(struct kvmp_vcpu *vcpu,
				const struct kvmp_vcpu_events *ev)
{
	const struct kvmp_backend *be = kvmp_backend;
	struct kvmp_event e = { .type = KVMP_EVENT_NONE };

	if (ev->flags & ~EVENTS_KNOWN)
		return -KVMP_EINVAL;
	if (ev->flags & KVMP_VCPUEVENT_VALID_PAYLOAD)
		return -KVMP_EINVAL;
	if (ev->exception.injected &&
	    (ev->exception.nr > 31 || ev->exception.nr == NMI_VECTOR))
		return -KVMP_EINVAL;
	/* kvmport has no SMM: entering it or a pending SMI cannot be taken */
	if ((ev->flags & KVMP_VCPUEVENT_VALID_SMM) &&
	    (ev->smi.smm || ev->smi.pending))
		return -KVMP_EINVAL;

	vcpu->last_exception.vector = ev->exception.nr;
	vcpu->last_exception.has_error = ev->exception.has_error_code;
	vcpu->last_exception.error = ev->exception.error_code;
	if (ev->exception.injected) {
		e = vcpu->last_exception;
		e.type = KVMP_EVENT_EXCEPTION;
	} else if (ev->nmi.injected) {
		e.type = KVMP_EVENT_NMI;
		e.vector = NMI_VECTOR;
	}
	be->set_event(vcpu, &e);
	/* one event an entry: an NMI behind an exception goes in after it */
	vcpu->nmi_injected = ev->nmi.injected && ev->exception.injected;

	vcpu->last_irq = ev->interrupt.nr;
	/* a soft interrupt needs its instruction length, which the ABI lacks */
	vcpu->pending_irq = ev->interrupt.injected && !ev->interrupt.soft ?
			    ev->interrupt.nr : -1;
	if (ev->flags & KVMP_VCPUEVENT_VALID_SHADOW)
		be->set_interrupt_shadow(vcpu, ev->interrupt.shadow);
	if (ev->flags & KVMP_VCPUEVENT_VALID_NMI_PENDING)
		vcpu->pending_nmi = ev->nmi.pending;
	be->set_nmi_mask(vcpu, ev->nmi.masked);
	/* SIPI_VECTOR and latched INIT mean nothing without an in-kernel APIC */
	if (ev->flags & KVMP_VCPUEVENT_VALID_TRIPLE_FAULT)
		return -KVMP_EINVAL;
	return 0;
}

static void kvmp_get_debugregs(struct kvmp_vcpu *vcpu, struct kvmp_debugregs *d)
{
	kvmp_os_memset(d, 0, sizeof(*d));
	kvmp_backend->get_debugregs(vcpu, d);
}

/* as Linux: no flags, nothing in DR6's and DR7's upper halves */
static int kvmp_set_debugregs(struct kvmp_vcpu *vcpu,
			      const struct kvmp_debugregs *d)
{
	if (d->flags || (d->dr6 >> 32) || (d->dr7 >> 32))
		return -KVMP_EINVAL;
	kvmp_backend->set_debugregs(vcpu, d);
	return 0;
}

/* XCR0 only; without XSAVE on the host there is none (as Linux) */
static void kvmp_get_xcrs(struct kvmp_vcpu *vcpu, struct kvmp_xcrs *x)
{
	kvmp_os_memset(x, 0, sizeof(*x));
	if (!kvmp_xcr0_supported)
		return;
	x->nr_xcrs = 1;
	x->xcrs[0].xcr = 0;
	x->xcrs[0].value = vcpu->xcr0;
}

/* the first entry for XCR0 is set by the guest's own rules; others ignored */
static int kvmp_set_xcrs(struct kvmp_vcpu *vcpu, const struct kvmp_xcrs *x)
{
	u32 i;

	if (!kvmp_xcr0_supported || x->nr_xcrs > KVMP_MAX_XCRS || x->flags)
		return -KVMP_EINVAL;
	for (i = 0; i < x->nr_xcrs; i++)
		if (x->xcrs[i].xcr == 0)
			return kvmp_set_xcr(vcpu, 0, x->xcrs[i].value) ?
			       -KVMP_EINVAL : 0;
	return 0;
}

union kvmp_state_block {
	struct kvmp_vcpu_events events;
	struct kvmp_debugregs debugregs;
	struct kvmp_xsave xsave;
	struct kvmp_xcrs xcrs;
};

/* called with the VCPU lock held; copies through a kernel buffer */
long kvmp_vcpu_state_ioctl(struct kvmp_vcpu *vcpu, unsigned int ioctl,
			   u64 uarg)
{
	union kvmp_state_block *b;
	unsigned long size;
	bool set;
	long r = 0;

	switch (ioctl) {
	case KVMP_GET_VCPU_EVENTS:
	case KVMP_SET_VCPU_EVENTS:
		size = sizeof(b->events);
		break;
	case KVMP_GET_DEBUGREGS:
	case KVMP_SET_DEBUGREGS:
		size = sizeof(b->debugregs);
		break;
	case KVMP_GET_XSAVE:
	case KVMP_SET_XSAVE:
		size = sizeof(b->xsave);
		break;
	case KVMP_GET_XCRS:
	case KVMP_SET_XCRS:
		size = sizeof(b->xcrs);
		break;
	default:
		return -KVMP_EINVAL;
	}
	set = ioctl == KVMP_SET_VCPU_EVENTS || ioctl == KVMP_SET_DEBUGREGS ||
	      ioctl == KVMP_SET_XSAVE || ioctl == KVMP_SET_XCRS;
	b = kvmp_os_zalloc(sizeof(*b));
	if (!b)
		return -KVMP_ENOMEM;
	if (set && kvmp_os_copy_from_user(b, uarg, size)) {
		kvmp_os_free(b);
		return -KVMP_EFAULT;
	}
	switch (ioctl) {
	case KVMP_GET_VCPU_EVENTS:
		kvmp_get_vcpu_events(vcpu, &b->events);
		break;
	case KVMP_SET_VCPU_EVENTS:
		r = kvmp_set_vcpu_events(vcpu, &b->events);
		break;
	case KVMP_GET_DEBUGREGS:
		kvmp_get_debugregs(vcpu, &b->debugregs);
		break;
	case KVMP_SET_DEBUGREGS:
		r = kvmp_set_debugregs(vcpu, &b->debugregs);
		break;
	case KVMP_GET_XSAVE:
		kvmp_fpu_get_xsave(vcpu, (u8 *)b->xsave.region);
		break;
	case KVMP_SET_XSAVE:
		r = kvmp_fpu_set_xsave(vcpu, (const u8 *)b->xsave.region);
		break;
	case KVMP_GET_XCRS:
		kvmp_get_xcrs(vcpu, &b->xcrs);
		break;
	case KVMP_SET_XCRS:
		r = kvmp_set_xcrs(vcpu, &b->xcrs);
		break;
	}
	if (!set && kvmp_os_copy_to_user(uarg, b, size))
		r = -KVMP_EFAULT;
	kvmp_os_free(b);
	return r;
}
