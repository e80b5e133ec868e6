// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kvmport on XNU: kmod start and stop, the character device /dev/kvmport,
 * and its handles.  Every ioctl goes to the portable core.
 *
 * The kext ABI (include/kvmport/kvmport_kext.h): a kext has no public way
 * to make file descriptors, so /dev/kvmport is a cloning node
 * (devfs_make_node_clone): every open gets its own minor number and a
 * handle of the core's kext ABI server (core/kvmp_kext.c), which turns
 * CREATE_VM/CREATE_VCPU into ids and ATTACH into a VM's or VCPU's handle.
 * The Linux port serves the same server on /dev/kvmport-kext.
 */
#include <sys/types.h>
#include <sys/param.h>
#include <sys/conf.h>
#include <sys/errno.h>
#include <sys/ioccom.h>
#include <sys/proc.h>
#include <libkern/copyio.h>
#include <miscfs/devfs/devfs.h>
#include <mach/kmod.h>
#include <IOKit/IOLib.h>

#include <kvmport/kvmport_kext.h>

#include "kvmp_port.h"
#include "kvmp_os_darwin.h"

#define KVMPORT_BUNDLE_ID	"org.kvmport.kvmport"
#define KVMPORT_VERSION		"0.1.0"

/*
 * The node's owner and mode: root and the admin group (80 on macOS), 0660 --
 * not kvm-kext's 0666: every user of the device can run code in ring -1's
 * shadow, so the administrator decides who (docs/kext.md).
 */
#define KVMPORT_UID		0
#define KVMPORT_GID		80
#define KVMPORT_MODE		0660

/* open handles: a minor each; 0 is the node itself */
#define KVMPORT_MAX_HANDLES	1024

/*
 * A minor's life: FREE, OPEN from the clone allocation until its last close,
 * then CLOSED (not reusable) until devfs frees the clone's node.
 */
enum kvmport_state { KVMPORT_FREE, KVMPORT_OPEN, KVMPORT_CLOSED };

struct kvmport_handle {
	enum kvmport_state state;
	struct kvmp_kext_handle h;	/* the core's: what the handle serves */
};

static struct kvmport_handle kvmport_handles[KVMPORT_MAX_HANDLES];
static struct kvmp_os_mutex *kvmport_lock;	/* the states */
static int kvmport_major = -1;
static void *kvmport_node;

/*
 * The port works with the core's negative Linux errno values; the cdevsw
 * entries hand XNU the BSD value, which differs for these.
 */
static const int kvmport_bsd_errno[] = {
	[KVMP_EAGAIN] = EAGAIN,
	[KVMP_EOPNOTSUPP] = EOPNOTSUPP,
};

static int kvmport_errno(long r)
{
	long e = -r;

	if (e > 0 && e < (long)ARRAY_SIZE(kvmport_bsd_errno) && kvmport_bsd_errno[e])
		return kvmport_bsd_errno[e];
	return (int)e;	/* 1..34 are the same in both */
}

/*
 * DEVFS_CLONE_ALLOC: a free minor for a new open.  DEVFS_CLONE_FREE comes
 * when devfs frees that clone's node, after its last close: only then may
 * the minor serve another open (a live node must not alias a new handle).
 */
static int kvmport_clone(dev_t dev, int action)
{
	struct kvmport_handle *h;
	int i, found = -1;

	kvmp_os_mutex_lock(kvmport_lock);
	if (action == DEVFS_CLONE_FREE) {
		i = minor(dev);
		h = i > 0 && i < KVMPORT_MAX_HANDLES ? &kvmport_handles[i] : NULL;
		/* an OPEN handle here was allocated but never opened */
		if (h)
			h->state = KVMPORT_FREE;
		found = 0;
		goto out;
	}
	for (i = 1; i < KVMPORT_MAX_HANDLES; i++) {
		h = &kvmport_handles[i];
		if (h->state == KVMPORT_FREE) {
			h->state = KVMPORT_OPEN;
			kvmp_kext_open(&h->h);
			found = i;
			break;
		}
	}
out:
	kvmp_os_mutex_unlock(kvmport_lock);
	return found;
}

static struct kvmport_handle *kvmport_get(dev_t dev)
{
	int m = minor(dev);

	if (m <= 0 || m >= KVMPORT_MAX_HANDLES)
		return NULL;
	return &kvmport_handles[m];
}

static int kvmport_open(dev_t dev, int flags, int devtype, struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);

	return kvmport_errno(h && h->state == KVMPORT_OPEN ? 0 : -KVMP_ENXIO);
}

/* each open has its own minor, so this is that handle's last close */
static int kvmport_close(dev_t dev, int flags, int devtype, struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);

	if (!h)
		return kvmport_errno(-KVMP_ENXIO);
	kvmp_kext_close(&h->h);
	kvmp_os_mutex_lock(kvmport_lock);
	h->state = KVMPORT_CLOSED;
	kvmp_os_mutex_unlock(kvmport_lock);
	return 0;
}

/* the core's objects are the port's: a kext keeps nothing beside them */
static long kvmport_vm_create(void *ctx, unsigned long type, void **vm)
{
	return kvmp_vm_create(type, (struct kvmp_vm **)vm);
}

static long kvmport_vcpu_create(void *ctx, void *vm, unsigned long id,
				void **vcpu)
{
	return kvmp_vcpu_create(vm, id, (struct kvmp_vcpu **)vcpu);
}

static long kvmport_vm_ioctl(void *ctx, void *vm, unsigned int cmd,
			     unsigned long arg)
{
	return kvmp_vm_ioctl(vm, cmd, arg);
}

static long kvmport_vcpu_ioctl(void *ctx, void *vcpu, unsigned int cmd,
			       unsigned long arg)
{
	/* the run area mapped into the caller's task (kvmp_os_iokit.cpp) */
	if (cmd == KVMP_MMAP_VCPU)
		return kvmp_darwin_mmap_vcpu(vcpu, arg);
	return kvmp_vcpu_ioctl(vcpu, cmd, arg);
}

static void kvmport_vm_put(void *vm)
{
	kvmp_vm_put(vm);
}

static void kvmport_vcpu_put(void *vcpu)
{
	kvmp_vcpu_destroy(vcpu);	/* drops its reference to the VM */
}

static const struct kvmp_kext_port kvmport_kext_port = {
	.vm_create = kvmport_vm_create,
	.vcpu_create = kvmport_vcpu_create,
	.vm_ioctl = kvmport_vm_ioctl,
	.vcpu_ioctl = kvmport_vcpu_ioctl,
	.vm_put = kvmport_vm_put,
	.vcpu_put = kvmport_vcpu_put,
};

/*
 * Every command is BSD IOC_VOID: XNU copies nothing and hands over the
 * caller's argument, a pointer to its struct kvmp_kext_call, which the core
 * reads and answers through the OS contract's copy helpers.  The process is
 * its pid.
 */
static int kvmport_ioctl(dev_t dev, u_long cmd, caddr_t data, int fflag,
			 struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);

	if (!h)
		return kvmport_errno(-KVMP_ENXIO);
	if ((cmd & IOC_DIRMASK) != IOC_VOID)
		return kvmport_errno(-KVMP_ENOTTY);
	return kvmport_errno(kvmp_kext_ioctl(&h->h, NULL, (u64)proc_pid(p),
					     (unsigned int)cmd,
					     *(user_addr_t *)data));
}

static struct cdevsw kvmport_cdevsw = {
	.d_open = kvmport_open,
	.d_close = kvmport_close,
	.d_read = eno_rdwrt,
	.d_write = eno_rdwrt,
	.d_ioctl = kvmport_ioctl,
	.d_stop = eno_stop,
	.d_reset = eno_reset,
	.d_ttys = NULL,
	.d_select = eno_select,
	.d_mmap = eno_mmap,
	.d_strategy = eno_strat,
	.d_reserved_1 = eno_getc,
	.d_reserved_2 = eno_putc,
	.d_type = 0,
};

/* VMX only: why SVM cannot run under this port is in kvmp_os_darwin.c */
const struct kvmp_backend *const kvmp_backends[] = {
	&kvmp_vmx_backend,
};
const unsigned int kvmp_nr_backends = ARRAY_SIZE(kvmp_backends);

static kern_return_t kvmport_start(kmod_info_t *ki, void *data)
{
	int r;

	r = kvmp_os_darwin_init();
	if (r)
		return KERN_FAILURE;
	kvmport_lock = kvmp_os_mutex_create(KVMP_LOCK_KEXT);
	if (!kvmport_lock)
		goto fail_os;
	r = kvmp_core_init();
	if (r)
		goto fail_lock;
	r = kvmp_kext_init(&kvmport_kext_port);
	if (r)
		goto fail_core;
	kvmport_major = cdevsw_add(-1, &kvmport_cdevsw);
	if (kvmport_major < 0) {
		IOLog("kvmport: no free character device major\n");
		goto fail_kext;
	}
	kvmport_node = devfs_make_node_clone(makedev(kvmport_major, 0), DEVFS_CHAR,
					     KVMPORT_UID, KVMPORT_GID, KVMPORT_MODE,
					     kvmport_clone, "kvmport");
	if (!kvmport_node) {
		IOLog("kvmport: cannot make /dev/kvmport\n");
		goto fail_cdev;
	}
	IOLog("kvmport: loaded, API version %d, device /dev/kvmport\n",
	      KVMP_API_VERSION);
	return KERN_SUCCESS;

fail_cdev:
	cdevsw_remove(kvmport_major, &kvmport_cdevsw);
fail_kext:
	kvmp_kext_exit();
fail_core:
	kvmp_core_exit();
fail_lock:
	kvmp_os_mutex_destroy(kvmport_lock);
fail_os:
	kvmp_os_darwin_exit();
	return KERN_FAILURE;
}

/*
 * Refused while a handle is open, or closed but its clone node not yet freed
 * (devfs would call kvmport_clone after the unload): kmutil says busy.
 */
static kern_return_t kvmport_stop(kmod_info_t *ki, void *data)
{
	int i;

	for (i = 1; i < KVMPORT_MAX_HANDLES; i++)
		if (kvmport_handles[i].state != KVMPORT_FREE)
			return KERN_FAILURE;
	devfs_remove(kvmport_node);
	cdevsw_remove(kvmport_major, &kvmport_cdevsw);
	kvmp_kext_exit();
	kvmp_core_exit();
	kvmp_os_mutex_destroy(kvmport_lock);
	kvmp_os_report_leaks();
	kvmp_os_darwin_exit();
	IOLog("kvmport: unloaded\n");
	return KERN_SUCCESS;
}

/*
 * What Xcode generates into a kext's info.c: the kmod_info kmutil reads, and
 * the start/stop that libkmod's _start/_stop (c_start.c, c_stop.c) call.
 */

__attribute__((visibility("default")))
kmod_info_t kmod_info = {
	.next = NULL,
	.info_version = KMOD_INFO_VERSION,
	.id = (uint32_t)-1,
	.name = KVMPORT_BUNDLE_ID,
	.version = KVMPORT_VERSION,
	.reference_count = -1,
	.reference_list = NULL,
	.address = 0,
	.size = 0,
	.hdr_size = 0,
	.start = _start,
	.stop = _stop,
};
__private_extern__ kmod_start_func_t *_realmain = kvmport_start;
__private_extern__ kmod_stop_func_t *_antimain = kvmport_stop;
__private_extern__ int _kext_apple_cc = __APPLE_CC__;
