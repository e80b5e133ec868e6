// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Guest memory: slots (KVM_SET_USER_MEMORY_REGION with Linux's checks and
 * errnos), lazy pinning of the pages the guest touches, copies to and from
 * guest-physical memory through the VMM's mapping, and the guest page walk.
 */
#include "kvmp_backend.h"

#define KVMP_MAX_SLOT_PAGES	((1ULL << 31) - 1) /* Linux's KVM_MEM_MAX_NR_PAGES */
#define KVMP_USER_TOP		(1ULL << 47)	/* x86-64 user space ends below */
/* 4-level nested page tables (NPT, EPT) translate 48-bit guest addresses */
#define KVMP_TDP_GPA_BITS	48
/* walks over a slot's pages give the CPU away this often */
#define KVMP_RESCHED_PAGES	(1ULL << 18)

/*
 * The highest guest frame a slot may reach: below the host's physical
 * address width, as Linux's kvm_mmu_max_gfn() with two-dimensional paging
 * (CPUID 0x80000008 EAX[7:0]), and within what the nested tables map.
 */
u64 kvmp_max_gfn(void)
{
	u32 a, b, c, d, bits = 36;

	kvmp_cpuid(0x80000000, 0, &a, &b, &c, &d);
	if (a >= 0x80000008) {
		kvmp_cpuid(0x80000008, 0, &a, &b, &c, &d);
		bits = a & 0xff;
	}
	if (bits > KVMP_TDP_GPA_BITS)
		bits = KVMP_TDP_GPA_BITS;
	return (1ULL << (bits - KVMP_PAGE_SHIFT)) - 1;
}

struct kvmp_slot *kvmp_find_slot(struct kvmp_vm *vm, u64 gpa)
{
	struct kvmp_slot *s;
	int i;

	for (i = 0; i < KVMP_MAX_SLOTS; i++) {
		s = vm->slots[i];
		if (s && gpa >= s->gpa && gpa - s->gpa < s->size)
			return s;
	}
	return NULL;
}

/* no slot there, or a write to a read-only one: the VMM's (MMIO), as in Linux */
static bool kvmp_slot_is_mmio(const struct kvmp_slot *s, bool write)
{
	return !s || (write && (s->flags & KVMP_MEM_READONLY));
}

/* kvmp_slot_is_mmio at gpa, a snapshot: slots may change right after */
bool kvmp_gpa_is_mmio(struct kvmp_vm *vm, u64 gpa, bool write)
{
	bool mmio;

	kvmp_os_mutex_lock(vm->lock);
	mmio = kvmp_slot_is_mmio(kvmp_find_slot(vm, gpa), write);
	kvmp_os_mutex_unlock(vm->lock);
	return mmio;
}

static bool kvmp_overlaps(struct kvmp_vm *vm, u32 id, u64 gpa, u64 size)
{
	struct kvmp_slot *s;
	u32 i;

	for (i = 0; i < KVMP_MAX_SLOTS; i++) {
		s = vm->slots[i];
		if (s && i != id && gpa < s->gpa + s->size && s->gpa < gpa + size)
			return true;
	}
	return false;
}

static void kvmp_unpin_slot(struct kvmp_vm *vm, struct kvmp_slot *s)
{
	u64 i;

	for (i = 0; i < s->size >> KVMP_PAGE_SHIFT; i++) {
		if (s->pins[i])
			kvmp_os_unpin_user_page(vm->mm, s->pins[i], true);
		if (!((i + 1) % KVMP_RESCHED_PAGES))
			kvmp_os_cond_resched();
	}
}

static void kvmp_free_slot(struct kvmp_vm *vm, struct kvmp_slot *s)
{
	kvmp_unpin_slot(vm, s);
	kvmp_os_free(s->pins);
	kvmp_os_free(s->pas);
	kvmp_os_free(s->dirty);
	kvmp_os_free(s);
}

/* as Linux's: whole longs, a bit a page, page 0 in bit 0 of the first */
static u64 kvmp_dirty_bytes(const struct kvmp_slot *s)
{
	return ((s->size >> KVMP_PAGE_SHIFT) + 63) / 64 * 8;
}

static void kvmp_mark_dirty(struct kvmp_slot *s, u64 gpa)
{
	u64 idx = (gpa - s->gpa) >> KVMP_PAGE_SHIFT;

	s->dirty[idx / 64] |= 1ULL << (idx % 64);
}

void kvmp_vcpu_guest_enter(struct kvmp_vcpu *vcpu, int cpu)
{
	__atomic_store_n(&vcpu->guest_cpu, cpu, __ATOMIC_SEQ_CST);
	/* seen before the VCPU reads the TLB generation (kvmp_kick_vm) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void kvmp_vcpu_guest_exit(struct kvmp_vcpu *vcpu)
{
	__atomic_store_n(&vcpu->guest_cpu, -1, __ATOMIC_RELEASE);
}

static int kvmp_kick_cpu(void *unused)
{
	return 0;	/* the interrupt itself is what makes a CPU leave guest mode */
}

/*
 * After a TLB generation bump: force out of guest mode the CPUs this VM's
 * VCPUs are in it on (each once), as Linux's remote TLB flush does; a VCPU
 * not in guest mode sees the new generation at its next entry.  vm->lock
 * or vm->mmu_lock held (vcpus[]); the IPIs do not sleep.
 */
static void kvmp_kick_vm(struct kvmp_vm *vm)
{
	int kicked[KVMP_MAX_VCPUS], n = 0, i, j, cpu;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (i = 0; i < vm->nr_vcpus; i++) {
		cpu = __atomic_load_n(&vm->vcpus[i]->guest_cpu, __ATOMIC_SEQ_CST);
		if (cpu < 0)
			continue;
		for (j = 0; j < n && kicked[j] != cpu; j++)
			;
		if (j < n)
			continue;
		kicked[n++] = cpu;
		kvmp_os_on_cpu(cpu, kvmp_kick_cpu, NULL);
	}
}

/* after mappings went away or lost write permission; vm->lock or mmu_lock */
static void kvmp_flush_vm(struct kvmp_vm *vm)
{
	__atomic_add_fetch(&vm->tlb_generation, 1, __ATOMIC_SEQ_CST);
	kvmp_kick_vm(vm);
}

/* vm->lock held: the slot stays; each piece under mmu_lock */
static void kvmp_unmap_slot(struct kvmp_vm *vm, struct kvmp_slot *s)
{
	u64 chunk = KVMP_RESCHED_PAGES << KVMP_PAGE_SHIFT, off, n;

	/* a slot may span terabytes: unmap it a piece at a time */
	for (off = 0; off < s->size; off += n) {
		n = s->size - off < chunk ? s->size - off : chunk;
		kvmp_os_spin_lock(vm->mmu_lock);
		kvmp_backend->unmap_range(vm, s->gpa + off, n);
		kvmp_os_spin_unlock(vm->mmu_lock);
		kvmp_os_cond_resched();
	}
}

/* slots[id] becomes s (or NULL); vm->lock held */
static void kvmp_set_slot(struct kvmp_vm *vm, u32 id, struct kvmp_slot *s)
{
	kvmp_os_spin_lock(vm->mmu_lock);
	vm->slots[id] = s;
	vm->mem_seq++;		/* a fault that pinned meanwhile tries again */
	kvmp_os_spin_unlock(vm->mmu_lock);
}

/*
 * Take a slot (no longer in slots[], so the MMU notifier cannot see it) out
 * of the guest: unmap its pages from the nested tables, force the VM's CPUs
 * out of guest mode so no stale TLB entry survives (VCPUs flush when they
 * see the new generation), then unpin.
 */
static void kvmp_retire_slot(struct kvmp_vm *vm, struct kvmp_slot *s)
{
	kvmp_unmap_slot(vm, s);
	kvmp_flush_vm(vm);
	kvmp_free_slot(vm, s);
}

/*
 * Dirty logging on: the log starts empty and every page mapped so far is
 * unmapped, so its next write faults and is logged.  Off: the log goes;
 * pages mapped read-only become writable at their next write fault.
 */
static int kvmp_slot_set_flags(struct kvmp_vm *vm, struct kvmp_slot *s,
			       u32 flags)
{
	u64 *dirty = NULL, *old;

	if (flags & KVMP_MEM_LOG_DIRTY_PAGES) {
		dirty = kvmp_os_zalloc(kvmp_dirty_bytes(s));
		if (!dirty)
			return -KVMP_ENOMEM;
	}
	kvmp_os_spin_lock(vm->mmu_lock);
	old = s->dirty;
	s->dirty = dirty;
	s->flags = flags;
	kvmp_os_spin_unlock(vm->mmu_lock);
	if (s->dirty) {
		kvmp_unmap_slot(vm, s);
		kvmp_flush_vm(vm);
	}
	kvmp_os_free(old);	/* the log that was, if any */
	return 0;
}

static struct kvmp_slot *kvmp_new_slot(u32 id, u32 flags, u64 gpa, u64 size,
				       u64 uaddr)
{
	struct kvmp_slot *s = kvmp_os_zalloc(sizeof(*s));
	u64 npages = size >> KVMP_PAGE_SHIFT;

	if (!s)
		return NULL;
	s->id = id;
	s->flags = flags;
	s->gpa = gpa;
	s->size = size;
	s->uaddr = uaddr;
	s->pins = kvmp_os_zalloc(npages * sizeof(*s->pins));
	s->pas = kvmp_os_zalloc(npages * sizeof(*s->pas));
	if (flags & KVMP_MEM_LOG_DIRTY_PAGES)
		s->dirty = kvmp_os_zalloc(kvmp_dirty_bytes(s));
	if (!s->pins || !s->pas ||
	    (!s->dirty && (flags & KVMP_MEM_LOG_DIRTY_PAGES))) {
		kvmp_os_free(s->pins);
		kvmp_os_free(s->pas);
		kvmp_os_free(s->dirty);
		kvmp_os_free(s);
		return NULL;
	}
	return s;
}

/*
 * Linux's default for KVM_GET_NR_MMU_PAGES, set when a slot comes or goes
 * (not when one moves) unless the VMM asked for a number: a fiftieth of the
 * slots' pages (KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO), at least 64.
 */
static void kvmp_update_nr_mmu_pages(struct kvmp_vm *vm)
{
	u64 pages = 0;
	int i;

	if (vm->nr_mmu_pages_set)
		return;
	for (i = 0; i < KVMP_MAX_SLOTS; i++)
		if (vm->slots[i])
			pages += vm->slots[i]->size >> KVMP_PAGE_SHIFT;
	pages /= 50;
	vm->nr_mmu_pages = pages > KVMP_MIN_MMU_PAGES ? pages : KVMP_MIN_MMU_PAGES;
}

int kvmp_set_user_memory_region(struct kvmp_vm *vm,
				const struct kvmp_userspace_memory_region *r)
{
	u32 id = r->slot & 0xffff, as_id = r->slot >> 16;
	struct kvmp_slot *old, *s;
	int ret = 0;

	/* the checks and their order follow Linux's __kvm_set_memory_region */
	if (r->flags & ~(KVMP_MEM_LOG_DIRTY_PAGES | KVMP_MEM_READONLY))
		return -KVMP_EINVAL;
	if (as_id || id >= KVMP_MAX_SLOTS)
		return -KVMP_EINVAL;
	if (r->memory_size & (KVMP_PAGE_SIZE - 1))
		return -KVMP_EINVAL;
	if (r->guest_phys_addr & (KVMP_PAGE_SIZE - 1))
		return -KVMP_EINVAL;
	if (r->userspace_addr & (KVMP_PAGE_SIZE - 1))
		return -KVMP_EINVAL;
	if (r->memory_size &&
	    (r->userspace_addr + r->memory_size < r->userspace_addr ||
	     r->userspace_addr + r->memory_size > KVMP_USER_TOP))
		return -KVMP_EINVAL;
	if (r->guest_phys_addr + r->memory_size < r->guest_phys_addr)
		return -KVMP_EINVAL;
	if ((r->memory_size >> KVMP_PAGE_SHIFT) > KVMP_MAX_SLOT_PAGES)
		return -KVMP_EINVAL;

	kvmp_os_mutex_lock(vm->lock);
	old = vm->slots[id];
	if (!r->memory_size) {				/* delete */
		if (!old) {
			ret = -KVMP_EINVAL;
		} else {
			kvmp_set_slot(vm, id, NULL);
			kvmp_retire_slot(vm, old);
			kvmp_update_nr_mmu_pages(vm);
		}
		goto out;
	}
	if (old) {
		/* a slot may move or keep its place, not change size, backing or
		 * whether it is read-only
		 */
		if (r->userspace_addr != old->uaddr || r->memory_size != old->size ||
		    ((r->flags ^ old->flags) & KVMP_MEM_READONLY)) {
			ret = -KVMP_EINVAL;
			goto out;
		}
		if (r->guest_phys_addr == old->gpa) {	/* flags, or nothing */
			if (r->flags != old->flags)	/* dirty logging */
				ret = kvmp_slot_set_flags(vm, old, r->flags);
			goto out;
		}
	}
	if (kvmp_overlaps(vm, id, r->guest_phys_addr, r->memory_size)) {
		ret = -KVMP_EEXIST;
		goto out;
	}
	/* as x86 kvm_arch_prepare_memory_region, before anything is allocated */
	if ((r->guest_phys_addr + r->memory_size - 1) >> KVMP_PAGE_SHIFT >
	    kvmp_max_gfn()) {
		ret = -KVMP_EINVAL;
		goto out;
	}
	s = kvmp_new_slot(id, r->flags, r->guest_phys_addr, r->memory_size,
			  r->userspace_addr);
	if (!s) {
		ret = -KVMP_ENOMEM;
		goto out;
	}
	kvmp_set_slot(vm, id, s);
	if (old)					/* move */
		kvmp_retire_slot(vm, old);
	else
		kvmp_update_nr_mmu_pages(vm);
out:
	kvmp_os_mutex_unlock(vm->lock);
	return ret;
}

void kvmp_free_slots(struct kvmp_vm *vm)
{
	int i;

	for (i = 0; i < KVMP_MAX_SLOTS; i++) {
		if (vm->slots[i]) {
			kvmp_free_slot(vm, vm->slots[i]);
			vm->slots[i] = NULL;
		}
	}
}

/*
 * A guest touched gpa and the nested table has no entry (or, under dirty
 * logging, no write permission): map the slot's page there, pinning it on
 * first use (always writable: no copy-on-write later).  Under dirty logging
 * a page is mapped writable only by a write, which is logged here.
 *
 * Pinning may fault the page in, which may call the MMU notifier: it is
 * done with both locks dropped, and the page kept only if no invalidation
 * or slot change came meanwhile (else -EAGAIN: the backend enters the guest
 * again and the fault comes back).
 */
int kvmp_tdp_fault(struct kvmp_vm *vm, struct kvmp_tdp *t, u64 gpa, bool write)
{
	struct kvmp_os_pin *pin = NULL;
	struct kvmp_slot *s;
	u64 idx, seq, pa = 0;
	int r;

	kvmp_os_mutex_lock(vm->lock);
	s = kvmp_find_slot(vm, gpa);
	if (kvmp_slot_is_mmio(s, write)) {
		kvmp_os_mutex_unlock(vm->lock);
		return -KVMP_ENOENT;
	}
	idx = (gpa - s->gpa) >> KVMP_PAGE_SHIFT;
	r = kvmp_tdp_prepare(t, gpa);	/* allocations: not under mmu_lock */
	if (r) {
		kvmp_os_mutex_unlock(vm->lock);
		return r;
	}
	kvmp_os_spin_lock(vm->mmu_lock);
	seq = vm->mem_seq;
	if (!s->pins[idx]) {
		kvmp_os_spin_unlock(vm->mmu_lock);
		kvmp_os_mutex_unlock(vm->lock);
		r = kvmp_os_pin_user_page(vm->mm, s->uaddr +
					  (idx << KVMP_PAGE_SHIFT), true, &pin,
					  &pa);
		if (r)
			return r;
		kvmp_os_mutex_lock(vm->lock);
		kvmp_os_spin_lock(vm->mmu_lock);
		/* mem_seq unchanged: s is still this VM's slot at gpa */
		if (vm->mem_seq != seq ||
		    __atomic_load_n(&vm->mm_invalidating, __ATOMIC_SEQ_CST)) {
			r = -KVMP_EAGAIN;
			goto out;
		}
		if (!s->pins[idx]) {	/* else another VCPU's pin won */
			s->pins[idx] = pin;
			s->pas[idx] = pa;
			pin = NULL;
		}
	}
	if (s->dirty && write)
		kvmp_mark_dirty(s, gpa);
	r = kvmp_tdp_map(t, gpa, s->pas[idx], (!s->dirty || write) &&
			 !(s->flags & KVMP_MEM_READONLY));
out:
	kvmp_os_spin_unlock(vm->mmu_lock);
	kvmp_os_mutex_unlock(vm->lock);
	if (pin)
		kvmp_os_unpin_user_page(vm->mm, pin, false);
	return r;
}

/* the pages of s that [start, end) of the VMM's space covers */
static bool kvmp_slot_span(const struct kvmp_slot *s, u64 start, u64 end,
			   u64 *first, u64 *last)
{
	u64 lo = start > s->uaddr ? start : s->uaddr;
	u64 hi = end < s->uaddr + s->size ? end : s->uaddr + s->size;

	if (lo >= hi)
		return false;
	*first = (lo - s->uaddr) >> KVMP_PAGE_SHIFT;
	*last = (hi - s->uaddr + KVMP_PAGE_SIZE - 1) >> KVMP_PAGE_SHIFT;
	return true;
}

/*
 * The port's MMU notifier: the VMM's mappings of [start, end) are about to
 * change.  Every page there leaves the nested tables and every TLB, then is
 * unpinned; faults wait (-EAGAIN) until the end.  Takes only mmu_lock and
 * never sleeps (the caller may not allow it).
 */
void kvmp_vm_mm_invalidate_start(struct kvmp_vm *vm, u64 start, u64 end)
{
	struct kvmp_slot *s;
	u64 first, last, i;
	bool flush = false;
	int n;

	kvmp_os_spin_lock(vm->mmu_lock);
	__atomic_add_fetch(&vm->mm_invalidating, 1, __ATOMIC_SEQ_CST);
	vm->mem_seq++;
	for (n = 0; n < KVMP_MAX_SLOTS; n++) {
		s = vm->slots[n];
		if (!s || !kvmp_slot_span(s, start, end, &first, &last))
			continue;
		for (i = first; i < last && !s->pins[i]; i++)
			;
		if (i == last)
			continue;
		kvmp_backend->unmap_range(vm, s->gpa + (first << KVMP_PAGE_SHIFT),
					  (last - first) << KVMP_PAGE_SHIFT);
		flush = true;
	}
	if (flush)
		kvmp_flush_vm(vm);
	for (n = 0; flush && n < KVMP_MAX_SLOTS; n++) {
		s = vm->slots[n];
		if (!s || !kvmp_slot_span(s, start, end, &first, &last))
			continue;
		for (i = first; i < last; i++) {
			if (s->pins[i]) {
				kvmp_os_unpin_user_page(vm->mm, s->pins[i],
							true);
				s->pins[i] = NULL;
			}
		}
	}
	kvmp_os_spin_unlock(vm->mmu_lock);
}

void kvmp_vm_mm_invalidate_end(struct kvmp_vm *vm)
{
	__atomic_sub_fetch(&vm->mm_invalidating, 1, __ATOMIC_SEQ_CST);
}

/*
 * Pages the kernel wrote for the guest (string I/O, emulation) are dirty
 * too, as in Linux; marked after the write, so a log read in between
 * cannot lose it.
 */
static void kvmp_mark_dirty_range(struct kvmp_vm *vm, u64 gpa, u64 n)
{
	struct kvmp_slot *s;
	u64 end = gpa + n;

	kvmp_os_mutex_lock(vm->lock);
	kvmp_os_spin_lock(vm->mmu_lock);
	s = kvmp_find_slot(vm, gpa);	/* it may have gone meanwhile */
	for (gpa &= ~(KVMP_PAGE_SIZE - 1); s && s->dirty && gpa < end &&
	     gpa - s->gpa < s->size; gpa += KVMP_PAGE_SIZE)
		kvmp_mark_dirty(s, gpa);
	kvmp_os_spin_unlock(vm->mmu_lock);
	kvmp_os_mutex_unlock(vm->lock);
}

/* Linux 6.1 on x86: KVM_USER_MEM_SLOTS ids; ids with no slot are ENOENT */
#define KVMP_LINUX_USER_MEM_SLOTS	32764

/* unmap the pages of one bitmap word's set bits, a run at a time */
static void kvmp_unmap_dirty(struct kvmp_vm *vm, struct kvmp_slot *s,
			     u64 word, u64 bits)
{
	u64 gpa = s->gpa + ((word * 64) << KVMP_PAGE_SHIFT);
	unsigned int bit = 0, end;

	while (bit < 64) {
		if (!((bits >> bit) & 1)) {
			bit++;
			continue;
		}
		for (end = bit; end < 64 && ((bits >> end) & 1); end++)
			;
		kvmp_backend->unmap_range(vm, gpa + ((u64)bit << KVMP_PAGE_SHIFT),
					  (u64)(end - bit) << KVMP_PAGE_SHIFT);
		bit = end;
	}
}

/*
 * KVM_GET_DIRTY_LOG, as Linux without manual protection: hand out the log
 * and clear it; the pages in it lose their mapping, so their next write is
 * logged again.
 */
int kvmp_get_dirty_log(struct kvmp_vm *vm, const struct kvmp_dirty_log *log)
{
	u32 id = log->slot & 0xffff, as_id = log->slot >> 16;
	u64 *copy = NULL, bytes = 0, i;
	struct kvmp_slot *s;
	bool flush = false;
	int r = 0;

	/* one address space: no SMM (KVM_CAP_MULTI_ADDRESS_SPACE is 0) */
	if (as_id || id >= KVMP_LINUX_USER_MEM_SLOTS)
		return -KVMP_EINVAL;
	kvmp_os_mutex_lock(vm->lock);
	s = id < KVMP_MAX_SLOTS ? vm->slots[id] : NULL;
	if (!s || !s->dirty) {
		r = -KVMP_ENOENT;
		goto out;
	}
	bytes = kvmp_dirty_bytes(s);
	copy = kvmp_os_zalloc(bytes);
	if (!copy) {
		r = -KVMP_ENOMEM;
		goto out;
	}
	for (i = 0; i < bytes / 8; i++) {
		kvmp_os_spin_lock(vm->mmu_lock);
		copy[i] = s->dirty[i];
		s->dirty[i] = 0;
		if (copy[i]) {
			kvmp_unmap_dirty(vm, s, i, copy[i]);
			flush = true;
		}
		kvmp_os_spin_unlock(vm->mmu_lock);
		if (!((i + 1) % (KVMP_RESCHED_PAGES / 64)))
			kvmp_os_cond_resched();
	}
	if (flush)
		kvmp_flush_vm(vm);
out:
	kvmp_os_mutex_unlock(vm->lock);
	/* copied out with the lock dropped: the buffer may fault */
	if (!r && kvmp_os_copy_to_user(log->dirty_bitmap, copy, bytes))
		r = -KVMP_EFAULT;
	kvmp_os_free(copy);
	return r;
}

/* copy within guest-physical memory through the VMM's own mapping of it */
static int kvmp_guest_copy(struct kvmp_vm *vm, u64 gpa, void *buf,
			   unsigned long n, bool to_guest)
{
	struct kvmp_slot *s;
	unsigned long chunk;
	bool readonly;
	u64 uaddr;
	int r;

	while (n) {
		kvmp_os_mutex_lock(vm->lock);
		s = kvmp_find_slot(vm, gpa);
		uaddr = s ? s->uaddr + (gpa - s->gpa) : 0;
		chunk = s ? s->gpa + s->size - gpa : 0;
		readonly = s && (s->flags & KVMP_MEM_READONLY);
		kvmp_os_mutex_unlock(vm->lock);
		/* as Linux's kvm_write_guest: read-only memory is not written */
		if (!s || (to_guest && readonly))
			return -KVMP_EFAULT;
		if (chunk > n)
			chunk = n;
		r = to_guest ? kvmp_os_copy_to_user(uaddr, buf, chunk) :
			       kvmp_os_copy_from_user(buf, uaddr, chunk);
		if (r)
			return r;
		if (to_guest)
			kvmp_mark_dirty_range(vm, gpa, chunk);
		gpa += chunk;
		buf = (u8 *)buf + chunk;
		n -= chunk;
	}
	return 0;
}

int kvmp_read_guest(struct kvmp_vm *vm, u64 gpa, void *dst, unsigned long n)
{
	return kvmp_guest_copy(vm, gpa, dst, n, false);
}

int kvmp_write_guest(struct kvmp_vm *vm, u64 gpa, const void *src,
		     unsigned long n)
{
	return kvmp_guest_copy(vm, gpa, (void *)src, n, true);
}

/*
 * The guest's own page walk (it is not running, so this is software): 32-bit,
 * PAE and 4-level paging, with large pages.  Not-present is -KVMP_EFAULT;
 * the caller reports it rather than injecting #PF.
 */
int kvmp_gva_to_gpa(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
		    u64 gva, u64 *gpa)
{
	int levels, level, shift;
	u64 table, entry = 0;
	u32 entry32;
	bool wide;

	if (!(s->cr0 & KVMP_CR0_PG)) {
		*gpa = (s->efer & KVMP_EFER_LMA) ? gva : gva & 0xffffffffULL;
		return 0;
	}
	if (s->efer & KVMP_EFER_LMA) {
		levels = 4;
		table = s->cr3 & 0x000ffffffffff000ULL;
		wide = true;
	} else if (s->cr4 & KVMP_CR4_PAE) {
		/* the 4 PDPTEs: index with bits 31:30 */
		gva &= 0xffffffffULL;
		table = s->cr3 & 0xffffffe0ULL;
		if (kvmp_read_guest(vcpu->vm, table + ((gva >> 30) & 3) * 8,
				    &entry, 8))
			return -KVMP_EFAULT;
		if (!(entry & 1))
			return -KVMP_EFAULT;
		levels = 2;
		table = entry & 0x000ffffffffff000ULL;
		wide = true;
	} else {
		gva &= 0xffffffffULL;
		levels = 2;
		table = s->cr3 & 0xfffff000ULL;
		wide = false;
	}

	for (level = levels; level >= 1; level--) {
		shift = 12 + (level - 1) * (wide ? 9 : 10);
		if (wide) {
			if (kvmp_read_guest(vcpu->vm,
					    table + ((gva >> shift) & 511) * 8,
					    &entry, 8))
				return -KVMP_EFAULT;
		} else {
			if (kvmp_read_guest(vcpu->vm,
					    table + ((gva >> shift) & 1023) * 4,
					    &entry32, 4))
				return -KVMP_EFAULT;
			entry = entry32;
		}
		if (!(entry & 1))
			return -KVMP_EFAULT;
		/* a large page: PS at PDPTE or PDE (PDE needs CR4.PSE in 32-bit) */
		if (level > 1 && (entry & 0x80) &&
		    (wide ? level <= 3 : (s->cr4 & KVMP_CR4_PSE) != 0)) {
			u64 base = entry & 0x000fffffffffe000ULL;

			if (!wide)	/* PSE-36: bits 39:32 live in 20:13 */
				base = (entry & 0xffc00000ULL) |
				       ((entry & 0x1fe000ULL) << 19);
			*gpa = (base & ~((1ULL << shift) - 1)) |
			       (gva & ((1ULL << shift) - 1));
			return 0;
		}
		table = wide ? entry & 0x000ffffffffff000ULL :
			       entry & 0xfffff000ULL;
	}
	*gpa = table | (gva & 0xfff);
	return 0;
}

/* copy through guest-virtual addresses, a page at a time */
static int kvmp_guest_virt_copy(struct kvmp_vcpu *vcpu,
				const struct kvmp_sregs *s, u64 gva, void *buf,
				unsigned int n, bool to_guest)
{
	unsigned int chunk;
	u64 gpa;
	int r;

	while (n) {
		chunk = KVMP_PAGE_SIZE - (gva & (KVMP_PAGE_SIZE - 1));
		if (chunk > n)
			chunk = n;
		r = kvmp_gva_to_gpa(vcpu, s, gva, &gpa);
		if (!r)
			r = to_guest ? kvmp_write_guest(vcpu->vm, gpa, buf, chunk) :
				       kvmp_read_guest(vcpu->vm, gpa, buf, chunk);
		if (r)
			return r;
		gva += chunk;
		buf = (u8 *)buf + chunk;
		n -= chunk;
	}
	return 0;
}

int kvmp_read_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			 u64 gva, void *dst, unsigned int n)
{
	return kvmp_guest_virt_copy(vcpu, s, gva, dst, n, false);
}

int kvmp_write_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			  u64 gva, const void *src, unsigned int n)
{
	return kvmp_guest_virt_copy(vcpu, s, gva, (void *)src, n, true);
}

/* the zone covers [addr, addr + len), as Linux's coalesced_mmio_in_range */
static bool kvmp_zone_covers(const struct kvmp_zone *z, u64 addr, u64 len)
{
	return addr + len >= addr && addr >= z->addr &&
	       addr + len <= z->addr + z->size;
}

/*
 * KVM_REGISTER_COALESCED_MMIO (add) and KVM_UNREGISTER_COALESCED_MMIO: the
 * latter drops every zone of that kind inside the one given, as Linux does.
 */
int kvmp_coalesced_zone(struct kvmp_vm *vm,
			const struct kvmp_coalesced_mmio_zone *zone, bool add)
{
	struct kvmp_zone z = { zone->addr, zone->size, zone->pio };
	u32 i;

	if (zone->pio != 0 && zone->pio != 1)
		return -KVMP_EINVAL;
	kvmp_os_mutex_lock(vm->lock);
	if (add) {
		if (vm->nr_zones >= KVMP_MAX_COALESCED_ZONES) {
			kvmp_os_mutex_unlock(vm->lock);
			return -KVMP_ENOSPC;
		}
		vm->zones[vm->nr_zones++] = z;
	} else {
		for (i = 0; i < vm->nr_zones;) {
			if (vm->zones[i].pio == z.pio &&
			    kvmp_zone_covers(&z, vm->zones[i].addr, vm->zones[i].size))
				vm->zones[i] = vm->zones[--vm->nr_zones];
			else
				i++;
		}
	}
	kvmp_os_mutex_unlock(vm->lock);
	return 0;
}

/*
 * A guest write the VMM asked to batch: into the ring, no exit; false when
 * no zone covers it or the ring is full (then it exits as usual, and the
 * VMM empties the ring at every exit).  The ring is the VMM's page too:
 * what it says of last is checked before use.
 */
bool kvmp_coalesce(struct kvmp_vm *vm, u64 addr, u32 len, const void *data,
		   bool pio)
{
	struct kvmp_coalesced_mmio_ring *ring = vm->ring;
	struct kvmp_coalesced_mmio *e;
	bool done = false;
	u32 i, last;

	if (!__atomic_load_n(&vm->nr_zones, __ATOMIC_RELAXED) || len > 8)
		return false;
	kvmp_os_mutex_lock(vm->lock);
	for (i = 0; i < vm->nr_zones; i++)
		if (vm->zones[i].pio == pio && kvmp_zone_covers(&vm->zones[i], addr, len))
			break;
	last = __atomic_load_n(&ring->last, __ATOMIC_RELAXED);
	if (i < vm->nr_zones && last < KVMP_COALESCED_MMIO_MAX &&
	    (last + 1) % KVMP_COALESCED_MMIO_MAX !=
	    __atomic_load_n(&ring->first, __ATOMIC_ACQUIRE)) {
		e = &ring->coalesced_mmio[last];
		e->phys_addr = addr;
		e->len = len;
		e->pio = pio;
		kvmp_os_memcpy(e->data, data, len);
		/* the entry is there before the VMM can see it */
		__atomic_store_n(&ring->last, (last + 1) % KVMP_COALESCED_MMIO_MAX,
				 __ATOMIC_RELEASE);
		done = true;
	}
	kvmp_os_mutex_unlock(vm->lock);
	return done;
}
