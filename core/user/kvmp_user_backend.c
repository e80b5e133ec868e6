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
};

/* the userspace build's only backend */
const struct kvmp_backend *const kvmp_backends[] = { &kvmp_user_backend };
const unsigned int kvmp_nr_backends = ARRAY_SIZE(kvmp_backends);
