// SPDX-License-Identifier: GPL-2.0
/*
 * kvmport on XNU: kmod start and stop, the character device /dev/kvmport,
 * and its handles.  Every ioctl goes to the portable core
 * (core/kvmp_main.c); only what makes handles is the port's.
 *
 * A kext has no public way to make file descriptors, so /dev/kvmport is a
 * cloning node (devfs_make_node_clone): every open gets its own minor
 * number, a handle that starts as a system handle.  A handle serves the
 * system, a VM or a VCPU ioctls according to its kind.
 */
#include <sys/types.h>
#include <sys/param.h>
#include <sys/conf.h>
#include <sys/errno.h>
#include <sys/ioccom.h>
#include <sys/proc.h>
#include <miscfs/devfs/devfs.h>
#include <mach/kmod.h>
#include <IOKit/IOLib.h>

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

enum kvmport_kind { KVMPORT_FREE, KVMPORT_SYSTEM, KVMPORT_VM, KVMPORT_VCPU };

struct kvmport_handle {
	enum kvmport_kind kind;
	int pid;			/* the process that made its VM */
	struct kvmp_vm *vm;		/* a VCPU handle holds its VM too */
	struct kvmp_vcpu *vcpu;
};

static struct kvmport_handle kvmport_handles[KVMPORT_MAX_HANDLES];
static struct kvmp_os_mutex *kvmport_lock;	/* the table's kinds */
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

/* DEVFS_CLONE_ALLOC: a free minor; DEVFS_CLONE_FREE: nothing to do */
static int kvmport_clone(dev_t dev, int action)
{
	int i, found = -1;

	if (action != DEVFS_CLONE_ALLOC)
		return 0;
	kvmp_os_mutex_lock(kvmport_lock);
	for (i = 1; i < KVMPORT_MAX_HANDLES; i++) {
		if (kvmport_handles[i].kind == KVMPORT_FREE) {
			kvmport_handles[i].kind = KVMPORT_SYSTEM;
			found = i;
			break;
		}
	}
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

	return kvmport_errno(h && h->kind == KVMPORT_SYSTEM ? 0 : -KVMP_ENXIO);
}

/* each open has its own minor, so this is that handle's last close */
static int kvmport_close(dev_t dev, int flags, int devtype, struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);

	if (!h)
		return kvmport_errno(-KVMP_ENXIO);
	if (h->vcpu)
		kvmp_vcpu_destroy(h->vcpu);
	if (h->vm)
		kvmp_vm_put(h->vm);
	kvmp_os_mutex_lock(kvmport_lock);
	h->vm = NULL;
	h->vcpu = NULL;
	h->kind = KVMPORT_FREE;
	kvmp_os_mutex_unlock(kvmport_lock);
	return 0;
}

/* the core's entry for this handle's kind */
static long kvmport_dispatch(struct kvmport_handle *h, int pid,
			     unsigned int cmd, unsigned long arg)
{
	/* a VM's memory is its maker's: other processes get EIO, as on Linux */
	if (h->kind != KVMPORT_SYSTEM && h->pid != pid)
		return -KVMP_EIO;
	switch (h->kind) {
	case KVMPORT_SYSTEM:
		return kvmp_system_ioctl(cmd, arg);
	case KVMPORT_VM:
		return kvmp_vm_ioctl(h->vm, cmd, arg);
	case KVMPORT_VCPU:
		return kvmp_vcpu_ioctl(h->vcpu, cmd, arg);
	default:
		return -KVMP_ENXIO;
	}
}

/*
 * Commands are BSD IOC_VOID: XNU copies nothing and hands over the caller's
 * argument itself (a value or a user pointer), which the core reads and
 * writes through the OS contract's copy helpers, as on Linux.
 */
static int kvmport_ioctl(dev_t dev, u_long cmd, caddr_t data, int fflag,
			 struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);
	long r;

	if (!h)
		r = -KVMP_ENXIO;
	else if ((cmd & IOC_DIRMASK) != IOC_VOID)
		r = -KVMP_ENOTTY;
	else
		r = kvmport_dispatch(h, proc_pid(p), (unsigned int)cmd,
				     (unsigned long)*(user_addr_t *)data);
	return r < 0 ? kvmport_errno(r) : 0;
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

/* VMX only: why SVM cannot run under this port is in kvmp_os.c */
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
	kvmport_lock = kvmp_os_mutex_create();
	if (!kvmport_lock)
		goto fail_os;
	r = kvmp_core_init();
	if (r)
		goto fail_lock;
	kvmport_major = cdevsw_add(-1, &kvmport_cdevsw);
	if (kvmport_major < 0) {
		IOLog("kvmport: no free character device major\n");
		goto fail_core;
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
fail_core:
	kvmp_core_exit();
fail_lock:
	kvmp_os_mutex_destroy(kvmport_lock);
fail_os:
	kvmp_os_darwin_exit();
	return KERN_FAILURE;
}

/* XNU refuses the unload while a handle is open: kmutil unload says busy */
static kern_return_t kvmport_stop(kmod_info_t *ki, void *data)
{
	int i;

	for (i = 1; i < KVMPORT_MAX_HANDLES; i++)
		if (kvmport_handles[i].kind != KVMPORT_FREE)
			return KERN_FAILURE;
	devfs_remove(kvmport_node);
	cdevsw_remove(kvmport_major, &kvmport_cdevsw);
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
