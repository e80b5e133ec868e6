"""RLIMIT_MEMLOCK for a VMM that is not root: user nobody in the device node's group (the
lab's udev stand-in gives /dev/kvm and /dev/kvmport root:kvm 0660), with a low limit.
Linux's KVM needs none; kvmport's pins stop at the limit with ENOMEM from KVM_RUN
(tests/guests/test_pinned_memory.py does the same as root without CAP_IPC_LOCK)."""

from __future__ import annotations

import os

from tests.guests.test_pinned_memory import check_memlock_outcome, in_child, memlock_run


def test_a_user_vmm_is_held_to_its_memlock_limit(kvm, device):
    st = os.stat(device)
    assert st.st_mode & 0o060 == 0o060, f"{device} is not open to its group: {oct(st.st_mode)}"
    check_memlock_outcome(kvm, in_child(memlock_run, device, "user"))
