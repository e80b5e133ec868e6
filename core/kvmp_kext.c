// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The kext ABI's server (include/kvmport/kvmport_kext.h): handles, the call
 * envelope, and the ids that stand for file descriptors.  The macOS port
 * serves it on /dev/kvmport; the Linux port serves it too, on
 * /dev/kvmport-kext, so everything of the macOS path but XNU runs in the lab.
 *
 * A handle starts fresh.  Its first call decides what it is: ATTACH makes it
 * a VM's or a VCPU's, anything else makes it a system handle.  CREATE_VM and
 * CREATE_VCPU park the new object under an id until a fresh handle of the
 * same process attaches it; what nobody attached ends with the handle that
 * made it.
 */
#include <kvmport/kvmport_kext.h>

#include "kvmp_port.h"

enum {
	KVMP_KEXT_FRESH,
	KVMP_KEXT_SYSTEM,
	KVMP_KEXT_VM,
	KVMP_KEXT_VCPU,
};

/*
 * Unattached objects one handle may hold: enough for any VMM (each CREATE
 * is followed by its ATTACH), few enough that a loop of CREATEs without
 * ATTACH runs out (EMFILE, as a full descriptor table does on Linux).
 */
#define KVMP_KEXT_MAX_PENDING	64

struct kvmp_kext_pending {
	struct kvmp_kext_pending *next;
	u64 id;
	const struct kvmp_kext_handle *creator;
	u64 owner;
	int kind;
	void *obj;
};

static const struct kvmp_kext_port *port;
static struct kvmp_os_mutex *lock;	/* handle kinds, the pending list, ids */
static struct kvmp_kext_pending *pending;
static u64 next_id = 1;

int kvmp_kext_init(const struct kvmp_kext_port *p)
{
	lock = kvmp_os_mutex_create(KVMP_LOCK_KEXT);
	if (!lock)
		return -KVMP_ENOMEM;
	port = p;
	return 0;
}

void kvmp_kext_exit(void)
{
	/* every handle is closed by now: the port's unload waits for that */
	kvmp_os_mutex_destroy(lock);
	lock = NULL;
}

void kvmp_kext_open(struct kvmp_kext_handle *h)
{
	h->kind = KVMP_KEXT_FRESH;
	h->owner = 0;
	h->obj = NULL;
}

static void kvmp_kext_drop(int kind, void *obj)
{
	if (kind == KVMP_KEXT_VCPU)
		port->vcpu_put(obj);
	else if (kind == KVMP_KEXT_VM)
		port->vm_put(obj);
}

/* no call is in flight on h any more (its last close) */
void kvmp_kext_close(struct kvmp_kext_handle *h)
{
	struct kvmp_kext_pending *mine = NULL, **pp, *o;

	kvmp_os_mutex_lock(lock);
	pp = &pending;
	while ((o = *pp)) {
		if (o->creator == h) {
			*pp = o->next;
			o->next = mine;
			mine = o;
		} else {
			pp = &o->next;
		}
	}
	kvmp_os_mutex_unlock(lock);
	/* VCPUs hold their VM: the order does not matter */
	while ((o = mine)) {
		mine = o->next;
		kvmp_kext_drop(o->kind, o->obj);
		kvmp_os_free(o);
	}
	kvmp_kext_drop(h->kind, h->obj);
	h->obj = NULL;
	h->kind = KVMP_KEXT_FRESH;
}

void *kvmp_kext_vcpu_of(struct kvmp_kext_handle *h)
{
	void *obj;

	kvmp_os_mutex_lock(lock);
	obj = h->kind == KVMP_KEXT_VCPU ? h->obj : NULL;
	kvmp_os_mutex_unlock(lock);
	return obj;
}

/* park a new object of h's under a fresh id: the id, or -errno (obj dropped) */
static long kvmp_kext_park(struct kvmp_kext_handle *h, u64 owner, int kind,
			   void *obj)
{
	struct kvmp_kext_pending *o, *it;
	unsigned int n = 0;
	long r;

	o = kvmp_os_zalloc(sizeof(*o));
	if (!o) {
		kvmp_kext_drop(kind, obj);
		return -KVMP_ENOMEM;
	}
	kvmp_os_mutex_lock(lock);
	for (it = pending; it; it = it->next)
		n += it->creator == h;
	if (n >= KVMP_KEXT_MAX_PENDING) {
		kvmp_os_mutex_unlock(lock);
		kvmp_os_free(o);
		kvmp_kext_drop(kind, obj);
		return -KVMP_EMFILE;
	}
	o->id = next_id++;
	o->creator = h;
	o->owner = owner;
	o->kind = kind;
	o->obj = obj;
	o->next = pending;
	pending = o;
	/* ids stay below 2^63: the result is a non-negative long */
	r = (long)(o->id & 0x7fffffffffffffffULL);
	kvmp_os_mutex_unlock(lock);
	return r;
}

/* KVMP_KEXT_ATTACH: a fresh handle takes a parked object of its process */
static long kvmp_kext_attach(struct kvmp_kext_handle *h, u64 owner, u64 uarg)
{
	struct kvmp_kext_pending **pp, *o;
	struct kvmp_kext_attach a;
	int kind;
	long r = -KVMP_ENOENT;

	if (kvmp_os_copy_from_user(&a, uarg, sizeof(a)))
		return -KVMP_EFAULT;
	if (a.flags || (a.kind != KVMP_KEXT_ATTACH_VM &&
			a.kind != KVMP_KEXT_ATTACH_VCPU))
		return -KVMP_EINVAL;
	kind = a.kind == KVMP_KEXT_ATTACH_VM ? KVMP_KEXT_VM : KVMP_KEXT_VCPU;
	kvmp_os_mutex_lock(lock);
	if (h->kind != KVMP_KEXT_FRESH) {
		r = -KVMP_EBUSY;
		goto out;
	}
	for (pp = &pending; (o = *pp); pp = &o->next) {
		if (o->id != a.id || o->owner != owner || o->kind != kind)
			continue;
		*pp = o->next;
		h->kind = kind;
		h->owner = owner;
		h->obj = o->obj;
		r = 0;
		break;
	}
out:
	kvmp_os_mutex_unlock(lock);
	if (!r)
		kvmp_os_free(o);
	return r;
}

/* what a system handle does; a fresh one becomes a system handle */
static long kvmp_kext_system(struct kvmp_kext_handle *h, void *ctx, u64 owner,
			     const struct kvmp_kext_call *c)
{
	void *obj;
	long r;
	int kind;

	if (c->cmd == KVMP_KEXT_ATTACH)
		return kvmp_kext_attach(h, owner, c->arg);
	kvmp_os_mutex_lock(lock);
	if (h->kind == KVMP_KEXT_FRESH)
		h->kind = KVMP_KEXT_SYSTEM;
	kind = h->kind;
	kvmp_os_mutex_unlock(lock);
	/* another thread attached the handle meanwhile */
	if (kind != KVMP_KEXT_SYSTEM)
		return -KVMP_EBUSY;
	if (c->cmd != KVMP_CREATE_VM)
		return kvmp_system_ioctl(c->cmd, c->arg);
	r = port->vm_create(ctx, c->arg, &obj);
	return r ? r : kvmp_kext_park(h, owner, KVMP_KEXT_VM, obj);
}

static long kvmp_kext_dispatch(struct kvmp_kext_handle *h, void *ctx,
			       u64 owner, const struct kvmp_kext_call *c)
{
	void *obj;
	long r;
	int kind;

	kvmp_os_mutex_lock(lock);
	kind = h->kind;
	kvmp_os_mutex_unlock(lock);
	if (kind == KVMP_KEXT_FRESH || kind == KVMP_KEXT_SYSTEM)
		return kvmp_kext_system(h, ctx, owner, c);
	/* a VM's memory is its maker's: other processes get EIO, as on Linux */
	if (h->owner != owner)
		return -KVMP_EIO;
	if (c->cmd == KVMP_KEXT_ATTACH)
		return -KVMP_EBUSY;	/* attached already */
	if (kind == KVMP_KEXT_VCPU)
		return port->vcpu_ioctl(ctx, h->obj, c->cmd, c->arg);
	if (c->cmd != KVMP_CREATE_VCPU)
		return port->vm_ioctl(ctx, h->obj, c->cmd, c->arg);
	r = port->vcpu_create(ctx, h->obj, c->arg, &obj);
	return r ? r : kvmp_kext_park(h, owner, KVMP_KEXT_VCPU, obj);
}

/*
 * One ioctl of the kext ABI: cmd is the number the caller used, ucall the
 * user address of its struct kvmp_kext_call.  0, with the result written
 * back, or -errno (Linux's numbers: a port translates them for its host).
 */
long kvmp_kext_ioctl(struct kvmp_kext_handle *h, void *ctx, u64 owner,
		     unsigned int cmd, u64 ucall)
{
	struct kvmp_kext_call c;
	long r;

	if ((cmd & ~(KVMP_KEXT_IOCPARM_MASK << 16 | 0xffffU)) != KVMP_KEXT_IOC_VOID)
		return -KVMP_ENOTTY;
	if (kvmp_os_copy_from_user(&c, ucall, sizeof(c)))
		return -KVMP_EFAULT;
	/* the number must be the command's, whose size must fit BSD's field */
	if (KVMP_KEXT_IOC(c.cmd) != cmd || !KVMP_KEXT_FITS(c.cmd))
		return -KVMP_ENOTTY;
	if (c.flags)
		return -KVMP_EINVAL;
	r = kvmp_kext_dispatch(h, ctx, owner, &c);
	if (r < 0)
		return r;
	c.result = (u64)r;
	if (kvmp_os_copy_to_user(ucall + __builtin_offsetof(struct kvmp_kext_call, result),
				 &c.result, sizeof(c.result)))
		return -KVMP_EFAULT;
	return 0;
}
