"""CPUID results as the device exchanges them (struct kvmp_cpuid2), shared by the system
fd (KVM_GET_SUPPORTED_CPUID) and the VCPU fd (KVM_SET_CPUID2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .abi import ffi


@dataclass(frozen=True)
class CpuidEntry:
    """One CPUID result (kvm_cpuid_entry2 without its padding)."""

    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0


_CPUID_FIELDS = ("function", "index", "flags", "eax", "ebx", "ecx", "edx")


def new_cpuid2(nent: int, entries: list[CpuidEntry] | None = None) -> Any:
    """A struct kvmp_cpuid2 with room for nent entries, filled from entries if given."""
    c = ffi.new("struct kvmp_cpuid2 *", {"nent": nent, "entries": nent})
    for dst, e in zip(c.entries, entries or [], strict=False):
        for field in _CPUID_FIELDS:
            setattr(dst, field, getattr(e, field))
    return c


def cpuid_entries(c: Any) -> list[CpuidEntry]:
    return [CpuidEntry(*(getattr(e, f) for f in _CPUID_FIELDS)) for e in c.entries[0:c.nent]]
