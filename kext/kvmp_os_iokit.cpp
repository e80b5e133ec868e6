// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The part of the OS contract that only IOKit's C++ classes offer publicly:
 * wiring a user page (vslock is private KPI) and physically contiguous
 * kernel pages with their physical address (IOMallocContiguous's is
 * deprecated).  Built with -fapple-kext.
 */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IOLib.h>
#include <IOKit/IOLocks.h>
#include <IOKit/IOMemoryDescriptor.h>

#include "kvmp_os_darwin.h"

/* the errno values used here, as core/kvmp_os.h numbers them */
#define KVMP_EFAULT	14
#define KVMP_ENOMEM	12

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
};

#define KVMP_CONTIG_BUCKETS	256
static struct kvmp_contig *kvmp_contig_hash[KVMP_CONTIG_BUCKETS];
static IOLock *kvmp_contig_lock;

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
	*pa = c->bmd->getPhysicalSegment(0, NULL, kIOMemoryMapperNone);
	b = kvmp_contig_bucket(c->va);
	IOLockLock(kvmp_contig_lock);
	c->next = kvmp_contig_hash[b];
	kvmp_contig_hash[b] = c;
	IOLockUnlock(kvmp_contig_lock);
	return c->va;
}

extern "C" void kvmp_os_iokit_free_contig(void *va)
{
	struct kvmp_contig **pp, *c = NULL;

	IOLockLock(kvmp_contig_lock);
	for (pp = &kvmp_contig_hash[kvmp_contig_bucket(va)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->va == va) {
			c = *pp;
			*pp = c->next;
			break;
		}
	}
	IOLockUnlock(kvmp_contig_lock);
	if (!c) {
		IOLog("kvmport: free of unknown page block %p\n", va);
		return;
	}
	c->bmd->release();
	IOFree(c, sizeof(*c));
}
