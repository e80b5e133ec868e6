/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * What a port (lkm/, kext/) sees of the core: the entry points its fd
 * operations call, with VMs and VCPUs as opaque handles, and the list of
 * backends its build supplies.
 */
#ifndef KVMPORT_CORE_KVMP_PORT_H
#define KVMPORT_CORE_KVMP_PORT_H

#include <kvmport/kvmport_ext.h>

#include "kvmp_os.h"

/* run area: the kvmp_run page, then the page port I/O data goes through */
#define KVMP_RUN_PAGES		2
/* what a VCPU fd maps: the run area, then the VM's coalesced MMIO ring */
#define KVMP_MMAP_PAGES		(KVMP_COALESCED_MMIO_PAGE_OFFSET + 1)

struct kvmp_vm;
struct kvmp_vcpu;
struct kvmp_backend;

#ifndef KVMP_CDEF	/* the userspace test build has neither */
extern const struct kvmp_backend kvmp_svm_backend;
extern const struct kvmp_backend kvmp_vmx_backend;
#endif
/* the backends a build has, tried in order (defined by the port's build) */
extern const struct kvmp_backend *const kvmp_backends[];
extern const unsigned int kvmp_nr_backends;

/* kvmp_main.c: the entry points a port calls (from its fd operations) */
int kvmp_core_init(void);
void kvmp_core_exit(void);
long kvmp_system_ioctl(unsigned int ioctl, unsigned long arg);
int kvmp_vm_create(unsigned long type, struct kvmp_vm **vmp);
void kvmp_vm_put(struct kvmp_vm *vm);
long kvmp_vm_ioctl(struct kvmp_vm *vm, unsigned int ioctl, unsigned long arg);
int kvmp_vcpu_create(struct kvmp_vm *vm, u32 id,
		     struct kvmp_vcpu **vcpup);
void kvmp_vcpu_destroy(struct kvmp_vcpu *vcpu);
long kvmp_vcpu_ioctl(struct kvmp_vcpu *vcpu, unsigned int ioctl,
		     unsigned long arg);
u64 kvmp_vcpu_run_page_pa(struct kvmp_vcpu *vcpu, unsigned long pgoff);

/*
 * CPU hotplug, suspend/resume and reboot: online/offline on the CPU that
 * comes or goes (or the last one, around suspend), CPUs held still.
 */
int kvmp_cpu_online(void);
void kvmp_cpu_offline(void);
void kvmp_reboot(void);

/*
 * The VMM's address space changes in [start, end): a port with
 * kvmp_os_mm_notifier calls these around every change (they never sleep).
 * Start takes the pages there out of the guest, end lets faults map them
 * again.
 */
void kvmp_vm_mm_invalidate_start(struct kvmp_vm *vm, u64 start, u64 end);
void kvmp_vm_mm_invalidate_end(struct kvmp_vm *vm);

/*
 * kvmp_kext.c: the kext ABI (include/kvmport/kvmport_kext.h), for a port
 * that serves it.  The port keeps a struct kvmp_kext_handle per open and
 * calls open, ioctl and close from its file operations; the core calls
 * back the port's ops to make, use and drop its VM and VCPU objects (which
 * wrap kvmp_vm and kvmp_vcpu with what the port keeps beside them).  ctx is
 * the port's, passed through; owner names the calling process.
 */
struct kvmp_kext_handle {
	int kind;	/* kvmp_kext.c's */
	u64 owner;	/* the process whose VM the handle serves */
	void *obj;	/* the port's VM or VCPU object */
};

struct kvmp_kext_port {
	long (*vm_create)(void *ctx, unsigned long type, void **vm);
	/* the new VCPU object holds its VM object until vcpu_put */
	long (*vcpu_create)(void *ctx, void *vm, unsigned long id, void **vcpu);
	long (*vm_ioctl)(void *ctx, void *vm, unsigned int cmd,
			 unsigned long arg);
	long (*vcpu_ioctl)(void *ctx, void *vcpu, unsigned int cmd,
			   unsigned long arg);
	void (*vm_put)(void *vm);
	void (*vcpu_put)(void *vcpu);
};

int kvmp_kext_init(const struct kvmp_kext_port *port);
void kvmp_kext_exit(void);
void kvmp_kext_open(struct kvmp_kext_handle *h);
void kvmp_kext_close(struct kvmp_kext_handle *h);
long kvmp_kext_ioctl(struct kvmp_kext_handle *h, void *ctx, u64 owner,
		     unsigned int cmd, u64 ucall);
/* the VCPU object of a VCPU handle, or NULL */
void *kvmp_kext_vcpu_of(struct kvmp_kext_handle *h);

#endif /* KVMPORT_CORE_KVMP_PORT_H */
