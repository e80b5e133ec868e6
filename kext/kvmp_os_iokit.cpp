// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The part of the OS contract that only IOKit's C++ classes offer publicly:
 * wiring a user page (vslock is private KPI), physically contiguous kernel
 * pages with their physical address (IOMallocContiguous's is deprecated),
 * and mapping a VCPU's run area into the calling task (KVMP_MMAP_VCPU).
 * Built with -fapple-kext.
 */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IOLib.h>
#include <IOKit/IOLocks.h>
#include <IOKit/IOMemoryDescriptor.h>

extern "C" {	/* the core's headers are C */
#include "kvmp_port.h"
}
#include "kvmp_os_darwin.h"

extern "C" int kvmp_os_iokit_wire(unsigned long long uaddr, int write,
				  void **mdp, unsigned long long *pa)
{
	IOOptionBits dir = write ? kIODirectionInOut : kIODirectionOut;
	IOMemoryDescriptor *md;

	md = IOMemoryDescriptor::withAddressRange(uaddr & ~(mach_vm_address_t)PAGE_MASK,
						  PAGE_SIZE, dir, current_task());
	if (!md)
		return -KVMP_ENOMEM;
	if (md->prepare(dir) != kIOReturnSuccess) {
		md->release();
		return -KVMP_EFAULT;
	}
	*pa = md->getPhysicalSegment(0, NULL, kIOMemoryMapperNone);
	*mdp = md;
	return 0;
}

extern "C" void kvmp_os_iokit_unwire(void *p)
{
	IOMemoryDescriptor *md = static_cast<IOMemoryDescriptor *>(p);

	md->complete();
	md->release();
}

/*
 * Contiguous blocks, found again by address: the contract's free passes only
 * the address.  A small hash of the live blocks, under one lock.
 */
struct kvmp_contig {
	struct kvmp_contig *next;
	void *va;
	IOBufferMemoryDescriptor *bmd;
	unsigned long long pa;
	unsigned long size;
	bool user_mapped;	/* once mapped, never given back (below) */
};

#define KVMP_CONTIG_BUCKETS	256
static struct kvmp_contig *kvmp_contig_hash[KVMP_CONTIG_BUCKETS];
static IOLock *kvmp_contig_lock;	/* the hash, the user maps, the count */

/*
 * Run areas mapped into a task by KVMP_MMAP_VCPU, each an IOMemoryMap over
 * the physical pages kvmp_vcpu_run_page_pa names (its VCPU's run pages and
 * its VM's ring).  Freeing any page block one covers releases it, which
 * removes it from the task (kvmp_os_iokit_free_contig).
 */
struct kvmp_umap {
	struct kvmp_umap *next;
	const void *vcpu;
	IOMemoryMap *map;
	unsigned long long pa[KVMP_MMAP_PAGES];
};

static struct kvmp_umap *kvmp_umaps;

/* live maps per VCPU: Linux's bound is the process's map count */
#define KVMP_UMAPS_PER_VCPU	16
/* pages kept out of circulation after a user mapping (4 KiB each) */
#define KVMP_KEPT_PAGES_MAX	16384
static unsigned long kvmp_kept_pages;

static unsigned int kvmp_contig_bucket(void *va)
{
	return ((unsigned long)va >> PAGE_SHIFT) % KVMP_CONTIG_BUCKETS;
}

extern "C" int kvmp_os_iokit_init(void)
{
	kvmp_contig_lock = IOLockAlloc();
	return kvmp_contig_lock ? 0 : -KVMP_ENOMEM;
}

extern "C" void kvmp_os_iokit_exit(void)
{
	if (kvmp_kept_pages)
		IOLog("kvmport: %lu pages stay allocated: mapped by a task once\n",
		      kvmp_kept_pages);
	IOLockFree(kvmp_contig_lock);
	kvmp_contig_lock = NULL;
}

extern "C" void *kvmp_os_iokit_alloc_contig(unsigned long size,
					    unsigned long long *pa)
{
	struct kvmp_contig *c;
	unsigned int b;

	c = static_cast<struct kvmp_contig *>(IOMalloc(sizeof(*c)));
	if (!c)
		return NULL;
	/* the mask keeps the low 12 bits clear: page-aligned, any address */
	c->bmd = IOBufferMemoryDescriptor::inTaskWithPhysicalMask(kernel_task,
		kIODirectionInOut | kIOMemoryPhysicallyContiguous, size,
		~(mach_vm_address_t)PAGE_MASK);
	if (!c->bmd) {
		IOFree(c, sizeof(*c));
		return NULL;
	}
	c->va = c->bmd->getBytesNoCopy();
	memset(c->va, 0, size);
	c->pa = c->bmd->getPhysicalSegment(0, NULL, kIOMemoryMapperNone);
	c->size = size;
	c->user_mapped = false;
	*pa = c->pa;
	b = kvmp_contig_bucket(c->va);
	IOLockLock(kvmp_contig_lock);
	c->next = kvmp_contig_hash[b];
	kvmp_contig_hash[b] = c;
	IOLockUnlock(kvmp_contig_lock);
	return c->va;
}

/* the user maps over [pa, pa + size), taken off the list; under the lock */
static struct kvmp_umap *kvmp_umaps_take(unsigned long long pa,
					 unsigned long size)
{
	struct kvmp_umap **pp = &kvmp_umaps, *taken = NULL, *u;
	unsigned int i;
	bool hit;

	while ((u = *pp)) {
		hit = false;
		for (i = 0; i < KVMP_MMAP_PAGES; i++)
			hit |= u->pa[i] >= pa && u->pa[i] - pa < size;
		if (!hit) {
			pp = &u->next;
			continue;
		}
		/* u->map is set: its VCPU, and so its VM, outlived the ioctl */
		*pp = u->next;
		u->next = taken;
		taken = u;
	}
	return taken;
}

/* releasing an IOMemoryMap unmaps it from its task: may sleep, no lock held */
static void kvmp_umaps_release(struct kvmp_umap *u)
{
	struct kvmp_umap *next;

	for (; u; u = next) {
		next = u->next;
		u->map->release();
		IOFree(u, sizeof(*u));
	}
}

/*
 * A block that was mapped into a task is not given back: the mapping made
 * here is gone once kvmp_umaps_release returns, but the user may have
 * aliased it (mach_vm_remap, minherit(VM_INHERIT_SHARE) and fork, a memory
 * entry), and an alias shares the device pager's VM object, whose pages
 * keep pointing at these physical pages after every IOKit object is gone.
 * Given back, they could be reused under that alias.  So they are kept
 * for good (bounded by KVMP_KEPT_PAGES_MAX; docs/kext.md).
 */
extern "C" void kvmp_os_iokit_free_contig(void *va)
{
	struct kvmp_contig **pp, *c = NULL;
	struct kvmp_umap *maps = NULL;

	IOLockLock(kvmp_contig_lock);
	for (pp = &kvmp_contig_hash[kvmp_contig_bucket(va)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->va == va) {
			c = *pp;
			*pp = c->next;
			break;
		}
	}
	if (c && c->user_mapped)
		maps = kvmp_umaps_take(c->pa, c->size);
	IOLockUnlock(kvmp_contig_lock);
	if (!c) {
		IOLog("kvmport: free of unknown page block %p\n", va);
		return;
	}
	kvmp_umaps_release(maps);
	if (!c->user_mapped)
		c->bmd->release();
	IOFree(c, sizeof(*c));
}

/*
 * Mark the block holding pa as user-mapped, within the bound on kept pages.
 * 0 or a negative KVMP_ errno; under the lock.
 */
static int kvmp_contig_mark_mapped(unsigned long long pa)
{
	struct kvmp_contig *c;
	unsigned int b;

	for (b = 0; b < KVMP_CONTIG_BUCKETS; b++) {
		for (c = kvmp_contig_hash[b]; c; c = c->next) {
			if (pa < c->pa || pa - c->pa >= c->size)
				continue;
			if (c->user_mapped)
				return 0;
			if (kvmp_kept_pages + c->size / PAGE_SIZE > KVMP_KEPT_PAGES_MAX)
				return -KVMP_ENOMEM;
			kvmp_kept_pages += c->size / PAGE_SIZE;
			c->user_mapped = true;
			return 0;
		}
	}
	IOLog("kvmport: a run page is in no page block of ours\n");
	return -KVMP_EINVAL;
}

/*
 * The run area's pages, marked user-mapped, and room for one more map of
 * this VCPU, reserved by putting u (map still NULL) on the list.
 */
static long kvmp_umap_reserve(struct kvmp_vcpu *vcpu, struct kvmp_umap *u,
			      IOAddressRange *r)
{
	struct kvmp_umap *o;
	unsigned int i, n = 0;
	long ret = 0;

	IOLockLock(kvmp_contig_lock);
	for (o = kvmp_umaps; o; o = o->next)
		n += o->vcpu == vcpu;
	if (n >= KVMP_UMAPS_PER_VCPU)
		ret = -KVMP_ENOMEM;
	for (i = 0; i < KVMP_MMAP_PAGES && !ret; i++) {
		u->pa[i] = kvmp_vcpu_run_page_pa(vcpu, i);
		r[i].address = u->pa[i];
		r[i].length = PAGE_SIZE;
		ret = u->pa[i] ? kvmp_contig_mark_mapped(u->pa[i]) : -KVMP_EINVAL;
	}
	if (!ret) {
		u->vcpu = vcpu;
		u->map = NULL;
		u->next = kvmp_umaps;
		kvmp_umaps = u;
	}
	IOLockUnlock(kvmp_contig_lock);
	return ret;
}

/* u off the list again (its map, if any, is the caller's to release) */
static void kvmp_umap_drop(struct kvmp_umap *u)
{
	struct kvmp_umap **pp;

	IOLockLock(kvmp_contig_lock);
	for (pp = &kvmp_umaps; *pp; pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			break;
		}
	}
	IOLockUnlock(kvmp_contig_lock);
}

/*
 * KVMP_MMAP_VCPU: the run area (KVMP_MMAP_PAGES pages, not contiguous)
 * mapped read-write and shared into the calling task where the kernel
 * chooses, with Linux's checks.  The caller is the VM's process (the port
 * checked).  Lifetime differs from Linux, where the mapping holds page
 * references and outlives the fd: this mapping, over physical pages, holds
 * none, so it lasts until its VCPU is destroyed: freeing the run pages
 * releases its IOMemoryMap, which unmaps it (kvmp_os_iokit_free_contig).
 * The VCPU cannot go meanwhile: its handle is in this ioctl.
 */
extern "C" long kvmp_darwin_mmap_vcpu(struct kvmp_vcpu *vcpu, u64 uarg)
{
	IOAddressRange r[KVMP_MMAP_PAGES];
	struct kvmp_mmap_vcpu req;
	IOMemoryDescriptor *md;
	struct kvmp_umap *u;
	IOMemoryMap *map;
	long ret;

	if (kvmp_os_copy_from_user(&req, uarg, sizeof(req)))
		return -KVMP_EFAULT;
	if (req.flags)
		return -KVMP_EINVAL;
	u = static_cast<struct kvmp_umap *>(IOMalloc(sizeof(*u)));
	if (!u)
		return -KVMP_ENOMEM;
	ret = kvmp_umap_reserve(vcpu, u, r);
	if (ret) {
		IOFree(u, sizeof(*u));
		return ret;
	}
	/* no task: physical ranges; RAM's default cache mode is write-back */
	md = IOMemoryDescriptor::withAddressRanges(r, KVMP_MMAP_PAGES,
						   kIODirectionInOut, NULL);
	map = md ? md->createMappingInTask(current_task(), 0, kIOMapAnywhere) : NULL;
	if (md)
		md->release();	/* the map holds it */
	if (!map) {
		kvmp_umap_drop(u);
		IOFree(u, sizeof(*u));
		return -KVMP_ENOMEM;
	}
	req.addr = map->getAddress();
	req.size = map->getLength();
	if (kvmp_os_copy_to_user(uarg, &req, sizeof(req))) {
		kvmp_umap_drop(u);
		map->release();
		IOFree(u, sizeof(*u));
		return -KVMP_EFAULT;
	}
	IOLockLock(kvmp_contig_lock);
	u->map = map;
	IOLockUnlock(kvmp_contig_lock);
	return 0;
}
