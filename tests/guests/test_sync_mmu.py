"""KVM_CAP_SYNC_MMU: a device that advertises it keeps the guest's view of memory in step
with the VMM's mappings (an MMU notifier, in Linux and in kvmport's Linux port); after
MADV_DONTNEED the guest must see the fresh zero page. A device without it must not claim
it: QEMU then keeps guest RAM whole (no balloon discards) instead of trusting a stale view."""

from __future__ import annotations

from pyhost import Cap

from .test_dirty_log import READ, access

PAGE = 0x30


def guest_reads(g, page: int) -> int:
    """Have dirty_log_real read the first byte of `page`; the byte it loaded (BL)."""
    assert access(g, page, READ) == []
    return g.vcpu.get_regs().rbx & 0xFF


def test_sync_mmu_is_claimed_only_where_the_guest_sees_the_vmms_changes(kvm, raw_guest):
    g = raw_guest("dirty_log_real")
    mem = g.vm.memory[0]
    mem.write(PAGE * 4096, b"\x77")
    assert guest_reads(g, PAGE) == 0x77  # the page is in the guest's tables now
    mem.discard(PAGE * 4096, 4096)  # the VMM drops it
    assert mem.read(PAGE * 4096, 1) == b"\0"
    sees_new_page = guest_reads(g, PAGE) == 0
    assert sees_new_page == bool(kvm.check_extension(Cap.SYNC_MMU)), \
        "KVM_CAP_SYNC_MMU must say whether the guest follows the VMM's mappings"
