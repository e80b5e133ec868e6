/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The interface a hardware backend (core/svm.c, core/vmx.c) implements: the
 * ops the core calls.  The core's services a backend calls are in
 * kvmp_core.h.
 */
#ifndef KVMPORT_CORE_KVMP_BACKEND_H
#define KVMPORT_CORE_KVMP_BACKEND_H

#include "kvmp_core.h"

/* what the run loop does after a backend handled one exit */
enum kvmp_exit_action {
	KVMP_REENTER = 1,	/* handled in the kernel: enter the guest again */
	KVMP_TO_USER = 0,	/* run->exit_reason is set: return to the VMM */
};

/*
 * A hardware backend.  run() enters the guest once and handles the exit; it
 * returns enum kvmp_exit_action or a negative errno.  Everything else is
 * called with the VCPU lock held and may sleep.
 */
struct kvmp_backend {
	const char *name;
	int (*hardware_setup)(void);		/* checks support; global state */
	void (*hardware_unsetup)(void);
	int (*cpu_enable)(void *unused);	/* on each CPU */
	int (*cpu_disable)(void *unused);

	int (*vm_init)(struct kvmp_vm *vm);
	void (*vm_destroy)(struct kvmp_vm *vm);
	/* drop every nested mapping of [gpa, gpa + size) */
	void (*unmap_range)(struct kvmp_vm *vm, u64 gpa, u64 size);

	int (*vcpu_create)(struct kvmp_vcpu *vcpu);
	void (*vcpu_free)(struct kvmp_vcpu *vcpu);
	void (*get_regs)(struct kvmp_vcpu *vcpu, struct kvmp_regs *regs);
	void (*set_regs)(struct kvmp_vcpu *vcpu, const struct kvmp_regs *regs);
	void (*get_sregs)(struct kvmp_vcpu *vcpu, struct kvmp_sregs *sregs);
	int (*set_sregs)(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *sregs);
	/* MSRs the backend keeps (EFER, SYSCALL and SYSENTER state, ...) */
	int (*get_msr)(struct kvmp_vcpu *vcpu, u32 index, u64 *data);
	int (*set_msr)(struct kvmp_vcpu *vcpu, u32 index, u64 data);
	/* guest TSC = host TSC + offset; the TSC MSRs' policy is the core's */
	u64 (*get_tsc_offset)(struct kvmp_vcpu *vcpu);
	void (*set_tsc_offset)(struct kvmp_vcpu *vcpu, u64 offset);
	/* events: the policy (what goes in when) is kvmp_inject_pending's */
	bool (*interrupt_allowed)(struct kvmp_vcpu *vcpu);	/* right now */
	bool (*nmi_allowed)(struct kvmp_vcpu *vcpu);
	void (*inject_irq)(struct kvmp_vcpu *vcpu, u8 vector);
	void (*inject_nmi)(struct kvmp_vcpu *vcpu);
	/* arm (or disarm) an exit for when an interrupt / NMI can be taken */
	void (*set_windows)(struct kvmp_vcpu *vcpu, bool irq, bool nmi);
	bool (*if_flag)(struct kvmp_vcpu *vcpu);
	/*
	 * The state KVM_GET/SET_VCPU_EVENTS and DEBUGREGS save and restore
	 * (the checks are kvmp_state.c's): the event the next entry delivers,
	 * the interrupt shadow as KVMP_X86_SHADOW_INT_* bits (each backend as
	 * Linux's for its CPU), NMI blocking, DR0-3, DR6 and DR7.
	 */
	void (*get_event)(struct kvmp_vcpu *vcpu, struct kvmp_event *e);
	void (*set_event)(struct kvmp_vcpu *vcpu, const struct kvmp_event *e);
	u8 (*get_interrupt_shadow)(struct kvmp_vcpu *vcpu);
	void (*set_interrupt_shadow)(struct kvmp_vcpu *vcpu, u8 shadow);
	bool (*get_nmi_mask)(struct kvmp_vcpu *vcpu);
	void (*set_nmi_mask)(struct kvmp_vcpu *vcpu, bool masked);
	void (*get_debugregs)(struct kvmp_vcpu *vcpu, struct kvmp_debugregs *d);
	void (*set_debugregs)(struct kvmp_vcpu *vcpu,
			      const struct kvmp_debugregs *d);
	int (*run)(struct kvmp_vcpu *vcpu);
};

/* the backend this CPU has, if any (kvmp_core_init picks it) */
extern const struct kvmp_backend *kvmp_backend;

#endif /* KVMPORT_CORE_KVMP_BACKEND_H */
