// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The two-dimensional page table (AMD nested paging, Intel EPT): four levels
 * of 512 entries mapping guest-physical to host-physical 4 KiB pages, built
 * lazily on the guest's first touch of a page.  The formats differ only in
 * the permission and memory-type bits, which the backend supplies.
 *
 * Each table is two pages: the one the hardware walks, then the kernel
 * addresses of its child tables (the hardware entries hold physical ones).
 *
 * Tables are added under vm->lock (allocation may sleep) and freed only with
 * the VM; leaves change under vm->mmu_lock, which the MMU notifier takes
 * while tables may be added beside it: a child is published after it is
 * zeroed, and read with acquire.
 */
#include "kvmp_core.h"

#define TDP_ADDR_MASK	0x000ffffffffff000ULL
#define TDP_LEVELS	4

static u64 *tdp_alloc_table(u64 *pa)
{
	return kvmp_os_alloc_pages(2, pa);
}

int kvmp_tdp_init(struct kvmp_tdp *t, u64 table_bits, u64 leaf_bits)
{
	t->table_bits = table_bits;
	t->leaf_bits = leaf_bits;
	t->root = tdp_alloc_table(&t->root_pa);
	return t->root ? 0 : -KVMP_ENOMEM;
}

static void tdp_free_table(u64 *table, int level)
{
	u64 **children = (u64 **)(table + 512);
	int i;

	for (i = 0; level > 1 && i < 512; i++)
		if (children[i])
			tdp_free_table(children[i], level - 1);
	kvmp_os_free_pages(table, 2);
}

void kvmp_tdp_destroy(struct kvmp_tdp *t)
{
	if (t->root)
		tdp_free_table(t->root, TDP_LEVELS);
	t->root = NULL;
}

/* the leaf entry for gpa, creating tables on the way if create (vm->lock) */
static u64 *tdp_leaf(struct kvmp_tdp *t, u64 gpa, bool create)
{
	u64 *table = t->root, *child, pa;
	int level, idx;

	for (level = TDP_LEVELS; level > 1; level--) {
		u64 **children = (u64 **)(table + 512);

		idx = (gpa >> (12 + 9 * (level - 1))) & 511;
		child = __atomic_load_n(&children[idx], __ATOMIC_ACQUIRE);
		if (!child) {
			if (!create)
				return NULL;
			child = tdp_alloc_table(&pa);
			if (!child)
				return NULL;
			__atomic_store_n(&children[idx], child, __ATOMIC_RELEASE);
			__atomic_store_n(&table[idx], pa | t->table_bits,
					 __ATOMIC_RELEASE);
		}
		table = child;
	}
	return &table[(gpa >> 12) & 511];
}

/* the tables down to gpa's leaf, so kvmp_tdp_map needs no allocation; vm->lock */
int kvmp_tdp_prepare(struct kvmp_tdp *t, u64 gpa)
{
	return tdp_leaf(t, gpa, true) ? 0 : -KVMP_ENOMEM;
}

/* after kvmp_tdp_prepare; vm->mmu_lock held */
int kvmp_tdp_map(struct kvmp_tdp *t, u64 gpa, u64 hpa, bool writable)
{
	u64 *pte = tdp_leaf(t, gpa, false), bits = t->leaf_bits;

	if (!pte)
		return -KVMP_ENOMEM;
	if (!writable) {
		/* another VCPU's write got there first: keep its mapping */
		if ((*pte & KVMP_TDP_WRITE) &&
		    (*pte & TDP_ADDR_MASK) == (hpa & TDP_ADDR_MASK))
			return 0;
		bits &= ~KVMP_TDP_WRITE;
	}
	*pte = (hpa & TDP_ADDR_MASK) | bits;
	return 0;
}

/* clear the leaves of [start, end) below table, which maps from base on */
static void tdp_unmap(u64 *table, int level, u64 base, u64 start, u64 end)
{
	u64 **children = (u64 **)(table + 512), *child;
	u64 span = 1ULL << (12 + 9 * (level - 1)), lo;
	int i = start > base ? (start - base) / span : 0;

	/* only the entries the range covers: dirty logging unmaps page by page */
	for (; i < 512; i++) {
		lo = base + i * span;
		if (lo >= end)
			break;
		if (level == 1) {
			table[i] = 0;
			continue;
		}
		child = __atomic_load_n(&children[i], __ATOMIC_ACQUIRE);
		if (child)	/* no table: nothing mapped below */
			tdp_unmap(child, level - 1, lo, start, end);
	}
}

/* vm->mmu_lock held */
void kvmp_tdp_unmap_range(struct kvmp_tdp *t, u64 gpa, u64 size)
{
	tdp_unmap(t->root, TDP_LEVELS, 0, gpa, gpa + size);
}

/* the leaf entry for gpa, or 0 where nothing maps it */
u64 kvmp_tdp_lookup(struct kvmp_tdp *t, u64 gpa)
{
	u64 *pte = tdp_leaf(t, gpa, false);

	return pte ? *pte : 0;
}
