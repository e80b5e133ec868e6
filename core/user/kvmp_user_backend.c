// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * A backend with no hardware behind it, so the core's slot, CPUID and MSR
 * logic can run in userspace under tests.  It records what the core asked of
 * it (unmapped ranges) and keeps a few MSRs in memory.
 */
#include "../kvmp_backend.h"

u64 kvmp_user_unmapped_bytes;	/* what unmap_range was asked to drop */
static u64 kvmp_user_star;

static void user_unmap_range(struct kvmp_vm *vm, u64 gpa, u64 size)
{
	(void)vm;
	(void)gpa;
	kvmp_user_unmapped_bytes += size;
}

static int user_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	(void)vcpu;
	if (index != 0xc0000081)
		return -KVMP_ENOENT;
	*data = kvmp_user_star;
	return 0;
}

static int user_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	(void)vcpu;
	if (index != 0xc0000081)
		return -KVMP_EINVAL;
	kvmp_user_star = data;
	return 0;
}

static u64 kvmp_user_tsc_offset;

static u64 user_get_tsc_offset(struct kvmp_vcpu *vcpu)
{
	(void)vcpu;
	return kvmp_user_tsc_offset;
}

static void user_set_tsc_offset(struct kvmp_vcpu *vcpu, u64 offset)
{
	(void)vcpu;
	kvmp_user_tsc_offset = offset;
}

/* one VCPU's registers, for the core's exit paths under test */
static struct kvmp_regs kvmp_user_regs;
static struct kvmp_sregs kvmp_user_sregs;

static void user_get_regs(struct kvmp_vcpu *vcpu, struct kvmp_regs *regs)
{
	(void)vcpu;
	*regs = kvmp_user_regs;
}

static void user_set_regs(struct kvmp_vcpu *vcpu, const struct kvmp_regs *regs)
{
	(void)vcpu;
	kvmp_user_regs = *regs;
}

static void user_get_sregs(struct kvmp_vcpu *vcpu, struct kvmp_sregs *sregs)
{
	(void)vcpu;
	*sregs = kvmp_user_sregs;
}

static int user_set_sregs(struct kvmp_vcpu *vcpu,
			  const struct kvmp_sregs *sregs)
{
	(void)vcpu;
	kvmp_user_sregs = *sregs;
	return 0;
}

/* the state KVM_GET/SET_VCPU_EVENTS and DEBUGREGS reach, in memory */
static struct kvmp_event kvmp_user_event;
static u8 kvmp_user_shadow;
static bool kvmp_user_nmi_masked;
static struct kvmp_debugregs kvmp_user_debugregs;

static void user_get_event(struct kvmp_vcpu *vcpu, struct kvmp_event *e)
{
	(void)vcpu;
	*e = kvmp_user_event;
}

static void user_set_event(struct kvmp_vcpu *vcpu, const struct kvmp_event *e)
{
	(void)vcpu;
	kvmp_user_event = *e;
}

static u8 user_get_interrupt_shadow(struct kvmp_vcpu *vcpu)
{
	(void)vcpu;
	return kvmp_user_shadow;
}

static void user_set_interrupt_shadow(struct kvmp_vcpu *vcpu, u8 shadow)
{
	(void)vcpu;
	kvmp_user_shadow = shadow ? 3 : 0;	/* as SVM's one bit */
}

static bool user_get_nmi_mask(struct kvmp_vcpu *vcpu)
{
	(void)vcpu;
	return kvmp_user_nmi_masked;
}

static void user_set_nmi_mask(struct kvmp_vcpu *vcpu, bool masked)
{
	(void)vcpu;
	kvmp_user_nmi_masked = masked;
}

static void user_get_debugregs(struct kvmp_vcpu *vcpu, struct kvmp_debugregs *d)
{
	(void)vcpu;
	kvmp_os_memcpy(d->db, kvmp_user_debugregs.db, sizeof(d->db));
	d->dr6 = kvmp_user_debugregs.dr6;
	d->dr7 = kvmp_user_debugregs.dr7;
}

static void user_set_debugregs(struct kvmp_vcpu *vcpu,
			       const struct kvmp_debugregs *d)
{
	(void)vcpu;
	kvmp_user_debugregs = *d;
}

static int user_ok(void)
{
	return 0;
}

static int user_cpu(void *unused)
{
	(void)unused;
	return 0;
}

static void user_nothing(void)
{
}

static int user_vm_init(struct kvmp_vm *vm)
{
	(void)vm;
	return 0;
}

static void user_vm_destroy(struct kvmp_vm *vm)
{
	(void)vm;
}

static int user_vcpu_create(struct kvmp_vcpu *vcpu)
{
	(void)vcpu;
	return 0;
}

static void user_vcpu_free(struct kvmp_vcpu *vcpu)
{
	(void)vcpu;
}

static const struct kvmp_backend kvmp_user_backend = {
	.name = "userspace test backend",
	.hardware_setup = user_ok,
	.hardware_unsetup = user_nothing,
	.cpu_enable = user_cpu,
	.cpu_disable = user_cpu,
	.vm_init = user_vm_init,
	.vm_destroy = user_vm_destroy,
	.unmap_range = user_unmap_range,
	.vcpu_create = user_vcpu_create,
	.vcpu_free = user_vcpu_free,
	.get_regs = user_get_regs,
	.set_regs = user_set_regs,
	.get_sregs = user_get_sregs,
	.set_sregs = user_set_sregs,
	.get_msr = user_get_msr,
	.set_msr = user_set_msr,
	.get_tsc_offset = user_get_tsc_offset,
	.set_tsc_offset = user_set_tsc_offset,
	.get_event = user_get_event,
	.set_event = user_set_event,
	.get_interrupt_shadow = user_get_interrupt_shadow,
	.set_interrupt_shadow = user_set_interrupt_shadow,
	.get_nmi_mask = user_get_nmi_mask,
	.set_nmi_mask = user_set_nmi_mask,
	.get_debugregs = user_get_debugregs,
	.set_debugregs = user_set_debugregs,
};

/* the userspace build's only backend */
const struct kvmp_backend *const kvmp_backends[] = { &kvmp_user_backend };
const unsigned int kvmp_nr_backends = ARRAY_SIZE(kvmp_backends);
