"""Raw guests: a flat binary loaded at an address and started in a chosen CPU mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .cpuid import CpuidEntry
from .errors import PyhostError
from .kvm import Kvm
from .vcpu import Vcpu
from .vm import PAGE_SIZE, Vm
from .x86.modes import LOAD_ADDRESS, LOW_STRUCTURES_END, Mode, setup_mode

DEFAULT_MEMORY = 2 << 20


@dataclass
class RawGuest:
    """A VM with one memory slot at 0 holding `image` at `entry`, and its VCPUs."""

    vm: Vm
    vcpus: list[Vcpu] = field(default_factory=list)

    @property
    def vcpu(self) -> Vcpu:
        return self.vcpus[0]

    def close(self) -> None:
        self.vm.close()

    def __enter__(self) -> RawGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_raw(kvm: Kvm, image: bytes, mode: Mode, *, entry: int = LOAD_ADDRESS,
             memory: int = DEFAULT_MEMORY, vcpus: int = 1,
             run_area: Literal["mmap", "ioctl"] | None = None,
             cpuid: list[CpuidEntry] | None = None) -> RawGuest:
    """Create a VM running `image` from `entry` in `mode` on each of `vcpus` VCPUs.

    The VCPUs see `cpuid`, by default what the device supports (set before the
    mode, since the device may check e.g. long mode against the guest's CPUID).
    """
    if memory % PAGE_SIZE or memory <= 0:
        raise PyhostError(f"memory size {memory:#x} is not a whole number of pages")
    if entry + len(image) > memory:
        raise PyhostError(
            f"the image ({len(image)} bytes at {entry:#x}) does not fit in {memory:#x} bytes "
            "of guest memory: give more memory (--mem) or a lower entry (--entry)"
        )
    if mode != "real" and entry < LOW_STRUCTURES_END:
        raise PyhostError(f"entry {entry:#x} overlaps the GDT and page tables below "
                          f"{LOW_STRUCTURES_END:#x}")
    vm = kvm.create_vm()
    guest = RawGuest(vm)
    try:
        vm.add_memory(0, memory)
        vm.write(entry, image)
        if cpuid is None:
            cpuid = kvm.get_supported_cpuid()
        for i in range(vcpus):
            vcpu = vm.create_vcpu(i, run_area=run_area)
            vcpu.set_cpuid2(cpuid)
            setup_mode(vm, vcpu, mode, entry)
            guest.vcpus.append(vcpu)
    except BaseException:
        vm.close()
        raise
    return guest
