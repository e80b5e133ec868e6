// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kvmport on XNU: kmod start and stop, the character device /dev/kvmport,
 * and its handles.  Every ioctl goes to the portable core
 * (core/kvmp_main.c); only what makes handles is the port's.
 *
 * The kext ABI (include/kvmport/kvmport_kext.h): a kext has no public way
 * to make file descriptors, so /dev/kvmport is a cloning node
 * (devfs_make_node_clone): every open gets its own minor number, a handle
 * that starts as a system handle.  KVMP_CREATE_VM and KVMP_CREATE_VCPU
 * leave the new object pending under an id, and KVMP_KEXT_ATTACH on a fresh
 * handle makes that handle the object's.  A handle serves the system, a VM
 * or a VCPU ioctls according to its kind.
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

/* CLOSED: released, its minor not reusable until devfs frees the clone */
enum kvmport_kind {
	KVMPORT_FREE, KVMPORT_SYSTEM, KVMPORT_VM, KVMPORT_VCPU, KVMPORT_CLOSED
};

struct kvmport_handle {
	enum kvmport_kind kind;
	bool used;			/* has made a call: no longer fresh */
	int pid;			/* the process that made its VM */
	struct kvmp_vm *vm;
	struct kvmp_vcpu *vcpu;		/* holds its VM */
};

/*
 * Objects made and not yet attached, each held for the handle (minor) that
 * made it: they end with it if never attached.
 */
#define KVMPORT_MAX_PENDING	64

struct kvmport_pending {
	u64 id;				/* 0: a free slot */
	int creator;			/* the minor that made it */
	int pid;
	enum kvmport_kind kind;
	struct kvmp_vm *vm;
	struct kvmp_vcpu *vcpu;
};

static struct kvmport_handle kvmport_handles[KVMPORT_MAX_HANDLES];
static struct kvmport_pending kvmport_pending[KVMPORT_MAX_PENDING];
static u64 kvmport_next_id = 1;
static struct kvmp_os_mutex *kvmport_lock;	/* kinds, pending objects */
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
		/* a SYSTEM handle here was allocated but never opened */
		if (h && (h->kind == KVMPORT_CLOSED || h->kind == KVMPORT_SYSTEM))
			h->kind = KVMPORT_FREE;
		found = 0;
		goto out;
	}
	for (i = 1; i < KVMPORT_MAX_HANDLES; i++) {
		h = &kvmport_handles[i];
		if (h->kind == KVMPORT_FREE) {
			h->kind = KVMPORT_SYSTEM;
			h->used = false;
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

	return kvmport_errno(h && h->kind == KVMPORT_SYSTEM ? 0 : -KVMP_ENXIO);
}

/* one pending object the handle made, taken off the list; false if none */
static bool kvmport_take_pending(int creator, struct kvmport_pending *out)
{
	bool found = false;
	int i;

	kvmp_os_mutex_lock(kvmport_lock);
	for (i = 0; i < KVMPORT_MAX_PENDING && !found; i++) {
		if (kvmport_pending[i].id && kvmport_pending[i].creator == creator) {
			*out = kvmport_pending[i];
			kvmport_pending[i].id = 0;
			found = true;
		}
	}
	kvmp_os_mutex_unlock(kvmport_lock);
	return found;
}

/*
 * Each open has its own minor, so this is that handle's last close.  What
 * it made and nobody attached ends here (in any order: a VCPU holds a
 * reference to its VM).
 */
static int kvmport_close(dev_t dev, int flags, int devtype, struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);
	struct kvmport_pending o;

	if (!h)
		return kvmport_errno(-KVMP_ENXIO);
	while (kvmport_take_pending(minor(dev), &o)) {
		if (o.vcpu)
			kvmp_vcpu_destroy(o.vcpu);
		if (o.vm)
			kvmp_vm_put(o.vm);
	}
	if (h->vcpu)
		kvmp_vcpu_destroy(h->vcpu);
	if (h->vm)
		kvmp_vm_put(h->vm);
	kvmp_os_mutex_lock(kvmport_lock);
	h->vm = NULL;
	h->vcpu = NULL;
	h->kind = KVMPORT_CLOSED;
	kvmp_os_mutex_unlock(kvmport_lock);
	return 0;
}

/* park a new VM or VCPU under a fresh id; the id, or -KVMP_ENOSPC */
static long kvmport_park(int creator, int pid, struct kvmp_vm *vm,
			 struct kvmp_vcpu *vcpu)
{
	long r = -KVMP_ENOSPC;
	int i;

	kvmp_os_mutex_lock(kvmport_lock);
	for (i = 0; i < KVMPORT_MAX_PENDING; i++) {
		struct kvmport_pending *o = &kvmport_pending[i];

		if (o->id)
			continue;
		o->id = kvmport_next_id++;
		o->creator = creator;
		o->pid = pid;
		o->kind = vcpu ? KVMPORT_VCPU : KVMPORT_VM;
		o->vm = vm;
		o->vcpu = vcpu;
		r = (long)o->id;
		break;
	}
	kvmp_os_mutex_unlock(kvmport_lock);
	return r;
}

static long kvmport_create_vm(int minor, int pid, unsigned long type)
{
	struct kvmp_vm *vm;
	long r = kvmp_vm_create(type, &vm);

	if (r)
		return r;
	r = kvmport_park(minor, pid, vm, NULL);
	if (r < 0)
		kvmp_vm_put(vm);
	return r;
}

static long kvmport_create_vcpu(struct kvmport_handle *h, int minor,
				unsigned long id)
{
	struct kvmp_vcpu *vcpu;
	long r = kvmp_vcpu_create(h->vm, id, &vcpu);

	if (r)
		return r;
	r = kvmport_park(minor, h->pid, NULL, vcpu);
	if (r < 0)
		kvmp_vcpu_destroy(vcpu);
	return r;
}

/* KVMP_KEXT_ATTACH: a fresh handle takes a pending object of its process */
static long kvmport_attach(struct kvmport_handle *h, int pid, u64 uarg)
{
	struct kvmp_kext_attach a;
	enum kvmport_kind kind;
	long r = -KVMP_ENOENT;
	int i;

	if (kvmp_os_copy_from_user(&a, uarg, sizeof(a)))
		return -KVMP_EFAULT;
	if (a.flags || (a.kind != KVMP_KEXT_ATTACH_VM &&
			a.kind != KVMP_KEXT_ATTACH_VCPU))
		return -KVMP_EINVAL;
	kind = a.kind == KVMP_KEXT_ATTACH_VM ? KVMPORT_VM : KVMPORT_VCPU;
	kvmp_os_mutex_lock(kvmport_lock);
	if (h->kind != KVMPORT_SYSTEM || h->used) {
		r = -KVMP_EBUSY;
		goto out;
	}
	for (i = 0; i < KVMPORT_MAX_PENDING; i++) {
		struct kvmport_pending *o = &kvmport_pending[i];

		if (!a.id || o->id != a.id || o->pid != pid || o->kind != kind)
			continue;
		h->kind = kind;
		h->pid = pid;
		h->vm = o->vm;
		h->vcpu = o->vcpu;
		o->id = 0;
		r = 0;
		break;
	}
out:
	h->used = true;
	kvmp_os_mutex_unlock(kvmport_lock);
	return r;
}

/* a call of the kext ABI: the core's entry for the handle's kind */
static long kvmport_call(struct kvmport_handle *h, int minor, int pid,
			 const struct kvmp_kext_call *c)
{
	/* a VM's memory is its maker's: other processes get EIO, as on Linux */
	if ((h->kind == KVMPORT_VM || h->kind == KVMPORT_VCPU) && h->pid != pid)
		return -KVMP_EIO;
	switch (h->kind) {
	case KVMPORT_SYSTEM:
		if (c->cmd == KVMP_KEXT_ATTACH)
			return kvmport_attach(h, pid, c->arg);
		h->used = true;
		if (c->cmd == KVMP_CREATE_VM)
			return kvmport_create_vm(minor, pid, c->arg);
		return kvmp_system_ioctl(c->cmd, c->arg);
	case KVMPORT_VM:
		if (c->cmd == KVMP_CREATE_VCPU)
			return kvmport_create_vcpu(h, minor, c->arg);
		return kvmp_vm_ioctl(h->vm, c->cmd, c->arg);
	case KVMPORT_VCPU:
		/* the run area into the caller's task (kvmp_os_iokit.cpp) */
		if (c->cmd == KVMP_MMAP_VCPU)
			return kvmp_darwin_mmap_vcpu(h->vcpu, c->arg);
		return kvmp_vcpu_ioctl(h->vcpu, c->cmd, c->arg);
	default:
		return -KVMP_ENXIO;
	}
}

/*
 * Every command is BSD IOC_VOID: XNU copies nothing and hands over the
 * caller's argument, a pointer to its struct kvmp_kext_call.  Its command
 * must be the one the number encodes; the core reads and writes the call's
 * own argument through the OS contract's copy helpers, as on Linux.
 */
static int kvmport_ioctl(dev_t dev, u_long cmd, caddr_t data, int fflag,
			 struct proc *p)
{
	struct kvmport_handle *h = kvmport_get(dev);
	struct kvmp_kext_call c;
	user_addr_t ucall;
	long r;

	if (!h)
		return kvmport_errno(-KVMP_ENXIO);
	if ((cmd & IOC_DIRMASK) != IOC_VOID)
		return kvmport_errno(-KVMP_ENOTTY);
	ucall = *(user_addr_t *)data;
	if (kvmp_os_copy_from_user(&c, ucall, sizeof(c)))
		return kvmport_errno(-KVMP_EFAULT);
	if (KVMP_KEXT_IOC(c.cmd) != cmd)
		return kvmport_errno(-KVMP_ENOTTY);
	if (c.flags)
		return kvmport_errno(-KVMP_EINVAL);
	r = kvmport_call(h, minor(dev), proc_pid(p), &c);
	if (r < 0)
		return kvmport_errno(r);
	c.result = (u64)r;
	if (kvmp_os_copy_to_user(ucall + offsetof(struct kvmp_kext_call, result),
				 &c.result, sizeof(c.result)))
		return kvmport_errno(-KVMP_EFAULT);
	return 0;
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

/*
 * Refused while a handle is open, or closed but its clone node not yet freed
 * (devfs would call kvmport_clone after the unload): kmutil says busy.
 */
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
