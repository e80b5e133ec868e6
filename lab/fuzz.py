"""A seeded fuzzer of ioctl sequences on the KVM API (issue 13), run inside the SVM lab.

    invoke fuzz                                     # the lab, kvmport loaded, default count
    python3 -m lab.fuzz --seed 1 --calls 5000       # inside the lab (kvmport loaded)

Two parts, interleaved in episodes, every choice drawn from `random.Random(seed)`:

- chaos, on each --device in turn (one device's VMs at a time: SVM belongs to one hypervisor
  at a time, the other gets EBUSY): a system fd, VMs, VCPUs and run areas (mmap and
  KVMP_MMAP_VCPU); every ioctl of include/kvmport/ on every fd type and unknown numbers, with
  valid structs mutated to boundary and random field values, bad pointers (NULL, PROT_NONE,
  read-only, kernel, non-canonical, misaligned, cut by a page boundary), random lengths
  (MSR lists, CPUID nent 0/max/huge), random flags; slot layouts (overlaps, moves, deletes,
  huge sizes, high GPAs, bad user addresses); KVM_RUN of a tiny real-mode guest (OUT, HLT,
  loops) or of whatever register state the fuzz left, always kicked after a few ms; and
  races: while one thread is in KVM_RUN another closes the VCPU, VM or system fd, changes a
  slot or calls an ioctl on the VCPU or VM.
- differential, when /dev/kvm and /dev/kvmport are both given: a batch of calls on a fresh
  system fd, VM (one slot) and VCPU, made on kvm_amd and then on kvmport; the outcomes
  (success or errno) must be equal, except the documented differences in ALLOWED.

Fails (exit 1) on a differential finding, a Python-side surprise, a kernel WARN/BUG/oops in
dmesg since the start, a leak report when --rmmod unloads kvmport, and (exit 3) a hang: the
watchdog sees no call finish for --stall seconds, prints every thread's kernel stack and the
last calls, and triggers sysrq-l. The same --seed/--calls/--device replays the same run
(threads aside). Every failure prints the seed's last calls and the command to reproduce.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import mmap
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pyhost.abi import ffi, lib

PAGE = 4096
LINUX, KVMPORT = "/dev/kvm", "/dev/kvmport"
BAD_DMESG = re.compile(
    r"WARNING:|BUG:|Oops|general protection|Call Trace|kernel BUG|UBSAN|KASAN|"
    r"list_add corruption|hung_task|blocked for more than|soft lockup"
)
KICK = signal.SIGUSR1

# name -> (fd type, argument type); the numbers come from include/ through cffi
IOCTLS: dict[str, tuple[str, str]] = {
    "GET_API_VERSION": ("sys", "int"),
    "CREATE_VM": ("sys", "int"),
    "GET_MSR_INDEX_LIST": ("sys", "msr_list"),
    "CHECK_EXTENSION": ("sys", "int"),
    "GET_VCPU_MMAP_SIZE": ("sys", "int"),
    "GET_SUPPORTED_CPUID": ("sys", "cpuid2"),
    "X86_GET_MCE_CAP_SUPPORTED": ("sys", "u64"),
    "CREATE_VCPU": ("vm", "int"),
    "SET_USER_MEMORY_REGION": ("vm", "region"),
    "SET_TSS_ADDR": ("vm", "int"),
    "SET_IDENTITY_MAP_ADDR": ("vm", "u64"),
    "GET_DIRTY_LOG": ("vm", "dirty_log"),
    "RUN": ("vcpu", "int"),
    "GET_REGS": ("vcpu", "struct kvmp_regs"),
    "SET_REGS": ("vcpu", "struct kvmp_regs"),
    "GET_SREGS": ("vcpu", "struct kvmp_sregs"),
    "SET_SREGS": ("vcpu", "struct kvmp_sregs"),
    "INTERRUPT": ("vcpu", "struct kvmp_interrupt"),
    "GET_MSRS": ("vcpu", "msrs"),
    "SET_MSRS": ("vcpu", "msrs"),
    "GET_FPU": ("vcpu", "struct kvmp_fpu"),
    "SET_FPU": ("vcpu", "struct kvmp_fpu"),
    "SET_CPUID2": ("vcpu", "cpuid2"),
    "GET_CPUID2": ("vcpu", "cpuid2"),
    "GET_MP_STATE": ("vcpu", "struct kvmp_mp_state"),
    "SET_MP_STATE": ("vcpu", "struct kvmp_mp_state"),
    "NMI": ("vcpu", "int"),
    "X86_SETUP_MCE": ("vcpu", "u64"),
    "GET_VCPU_EVENTS": ("vcpu", "struct kvmp_vcpu_events"),
    "SET_VCPU_EVENTS": ("vcpu", "struct kvmp_vcpu_events"),
    "GET_XSAVE": ("vcpu", "struct kvmp_xsave"),
    "SET_XSAVE": ("vcpu", "struct kvmp_xsave"),
    "GET_DEBUGREGS": ("vcpu", "struct kvmp_debugregs"),
    "SET_DEBUGREGS": ("vcpu", "struct kvmp_debugregs"),
    "GET_XCRS": ("vcpu", "struct kvmp_xcrs"),
    "SET_XCRS": ("vcpu", "struct kvmp_xcrs"),
    "MMAP_VCPU": ("vcpu", "struct kvmp_mmap_vcpu"),
}
NUMBER = {name: int(getattr(lib, "KVMP_" + name)) for name in IOCTLS}
# Numbers no KVM ioctl has: KVMIO's 0xfe and other ioctl types ('T' 0x54 is the tty's).
UNKNOWN = [0xAEFE, 0xAE00 | 0x7F, 0x5401, 0x12345678, 0xC008AEFD, 0x4004B7FF]

# How long each device's MSR index list and supported CPUID are (filled at run time).
LIST_LENGTHS: dict[str, dict[str, int]] = {}


def _u32(c: Call, offset: int = 0) -> int | None:
    a = c.arg
    if a.kind != "buf" or len(a.data) < offset + 4:
        return None
    return int.from_bytes(a.data[offset:offset + 4], "little")


def _between_lengths(what: str) -> Callable[[Call], bool]:
    """The count lies where one device's list fits and the other's does not."""
    def pred(c: Call) -> bool:
        n = _u32(c)
        lens = [LIST_LENGTHS.get(d, {}).get(what, 0) for d in (LINUX, KVMPORT)]
        return n is not None and min(lens) <= n < max(lens)
    return pred


def _cut_between_lengths(what: str, header: int, entry: int) -> Callable[[Call], bool]:
    """A buffer the guard page cuts short between the two lists' sizes: one device's list
    fits in it, the other's runs into the guard (EFAULT on that side only)."""
    def pred(c: Call) -> bool:
        a = c.arg
        if a.kind != "buf" or not a.cut:
            return False
        room = len(a.data) - max(a.misalign, 1)
        sizes = [header + entry * LIST_LENGTHS.get(d, {}).get(what, 0) for d in (LINUX, KVMPORT)]
        return min(sizes) <= room < max(sizes)
    return pred


def _smm_address_space(c: Call) -> bool:
    """docs/driver.md, dirty logging: no SMM address space (slot ids from 0x10000)."""
    slot = _u32(c)
    return slot is not None and slot >> 16 == 1


def _sregs_differs_on_purpose(c: Call) -> bool:
    """docs/driver.md, Security, KVM_SET_SREGS: EFER bits other than SCE/LME/LMA/NXE and
    CR4.PKE are refused (EINVAL) where Linux takes them."""
    if c.arg.kind != "buf":
        return False
    off_efer = ffi.offsetof("struct kvmp_sregs", "efer")
    off_cr4 = ffi.offsetof("struct kvmp_sregs", "cr4")
    d = c.arg.data
    if len(d) < max(off_efer, off_cr4) + 8:
        return False
    efer = int.from_bytes(d[off_efer:off_efer + 8], "little")
    cr4 = int.from_bytes(d[off_cr4:off_cr4 + 8], "little")
    return bool(efer & ~0xD01) or bool(cr4 & (1 << 22))


def _slot_beyond_ours(c: Call) -> bool:
    """docs/driver.md, Known limits: 32 slots and no SMM address space (Linux: 32764, 2)."""
    slot = _u32(c)
    return slot is not None and (slot >> 16 == 1 or (slot >> 16 == 0 and slot >= 32))


def _events_enter_smm(c: Call) -> bool:
    """KVM_SET_VCPU_EVENTS asking for SMM (docs/driver.md, VCPU state: kvmport has none)."""
    if c.arg.kind != "buf" or len(c.arg.data) < ffi.sizeof("struct kvmp_vcpu_events"):
        return False
    ev = ffi.from_buffer("struct kvmp_vcpu_events *", bytearray(c.arg.data))
    return bool(ev.flags & lib.KVMP_VCPUEVENT_VALID_SMM) and bool(ev.smi.smm or ev.smi.pending)


# Differential outcomes that differ from kvm_amd on purpose or by a documented limit, as
# (ioctl, predicate on the call, kvmport's answer (None: any), reason).  A mismatch that
# matches none is a finding.
ALLOWED: list[tuple[str, Callable[[Call], bool], str | None, str]] = [
    ("SET_VCPU_EVENTS", _events_enter_smm, "EINVAL",
     "docs/driver.md, VCPU state: no SMM (VALID_SMM with smi.smm or smi.pending is refused)"),
    ("GET_MSRS", lambda c: c.fd == "sys", "EINVAL",
     "docs/driver.md, Known limits: no feature MSRs on the system fd "
     "(KVM_CAP_GET_MSR_FEATURES is 0)"),
    ("MMAP_VCPU", lambda c: True, None,
     "kvmport's own ioctl (include/kvmport/kvmport_ext.h): kvm_amd does not have it"),
    ("CREATE_VCPU", lambda c: c.arg.kind == "int" and c.arg.value & 0xFFFFFFFF > 1023,
     "EINVAL", "docs/driver.md, Known limits: VCPU ids up to 1023 (KVM_CAP_MAX_VCPU_ID)"),
    ("GET_MSR_INDEX_LIST", _between_lengths("msrs"), None,
     "the MSR lists differ in length (docs/driver.md, MSRs): E2BIG on one side only"),
    ("GET_SUPPORTED_CPUID", _between_lengths("cpuid"), None,
     "the supported CPUID lists differ in length (kvmport offers less): E2BIG on one side"),
    ("GET_SUPPORTED_CPUID", _cut_between_lengths("cpuid", 8, 40), None,
     "the supported CPUID lists differ in length: a short buffer faults on one side only"),
    ("GET_MSR_INDEX_LIST", _cut_between_lengths("msrs", 4, 4), None,
     "the MSR lists differ in length: a short buffer faults on one side only"),
    ("GET_DIRTY_LOG", _smm_address_space, "EINVAL",
     "docs/driver.md, dirty logging: no SMM address space (Linux: ENOENT, no slot there)"),
    ("SET_SREGS", _sregs_differs_on_purpose, "EINVAL",
     "docs/driver.md, Security: KVM_SET_SREGS refuses other EFER bits and CR4.PKE"),
    ("SET_USER_MEMORY_REGION", _slot_beyond_ours, "EINVAL",
     "docs/driver.md, Known limits: 32 slots, no SMM address space"),
]


# MSRs the fuzz reads and writes: architectural ones kvmport and Linux both know, plus
# some neither has (the index list of the device is added at run time).
MSRS = [0x10, 0x1B, 0x174, 0x175, 0x176, 0x277, 0x2FF, 0xC0000080, 0xC0000081, 0xC0000082,
        0xC0000084, 0xC0000100, 0xC0000101, 0xC0000102, 0xC0000103, 0x8B, 0x0, 0xFFFFFFFF,
        0x40000000, 0xC0010000, 0xC0010117, 0x179, 0x17A, 0x400, 0x401, 0x1D9, 0x6E0]

# real mode at 0x8000: out 0x80 five times in a loop, hlt, then loop forever; at 0x8010 a
# store to 0xffff0 (in the slot) and one to 0x100000 (no slot: MMIO), hlt
GUEST = bytes.fromhex(
    "b90500"  # mov cx, 5
    "e680"  # out 0x80, al
    "e2fc"  # loop
    "f4"  # hlt
    "ebfe"  # jmp $
) + bytes(16 - 10) + bytes.fromhex(
    "b800f0"  # mov ax, 0xf000
    "8ed8"  # mov ds, ax
    "a2f0ff"  # mov [0xfff0], al
    "66b800001000"  # mov eax, 0x100000
    "678800"  # mov [eax], al (a32)
    "f4"  # hlt
)
ENTRIES = [0x8000, 0x8008, 0x8010]  # 0x8008: jmp $ (a guest only a kick stops)


U64S = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x7FFF, 0x8000, 0xFFFF,
            0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 47) - 1, 1 << 47,
            (1 << 52), (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - PAGE)


def boundary(rng: random.Random, bits: int) -> int:
    """A value for an integer field of `bits` bits: a boundary one mostly, else random."""
    mask = (1 << bits) - 1
    if rng.random() < 0.7:
        v = rng.choice(U64S)
        if rng.random() < 0.2:
            v += rng.choice((-1, 1))
        return v & mask
    return rng.getrandbits(bits)


# --- argument descriptions: data only, so a call can be replayed on another device -----

@dataclass
class Arg:
    kind: str  # "int" | "bad" | "buf"
    value: int = 0  # int value, or a bad address (absolute, or "arena+" relative if rel)
    data: bytes = b""  # buf: the bytes copied in
    misalign: int = 0
    cut: bool = False  # buf ends at the guard page (the kernel's read/write runs into it)
    rel: str = ""  # bad: "guard" | "ro" (relative to the arena) or "" (absolute)
    patch: list[tuple[int, int]] = field(default_factory=list)  # (offset, guest mem offset)


@dataclass
class Call:
    fd: str  # "sys" | "vm" | "vcpu" | "vcpu2"
    name: str
    request: int
    arg: Arg

    def describe(self, full: bool = False) -> str:
        a = self.arg
        shown = a.data if full else a.data[:48]
        if a.kind == "int":
            arg = f"{a.value:#x}"
        elif a.kind == "bad":
            arg = f"bad {a.rel + '+' if a.rel else ''}{a.value:#x}"
        else:
            arg = (f"buf[{len(a.data)}]{' cut' if a.cut else ''}"
                   f"{f' +{a.misalign}' if a.misalign else ''} {shown.hex()}"
                   f"{'...' if len(a.data) > len(shown) else ''}")
        return f"{self.fd} {self.name}({self.request:#x}) {arg}"


BAD_POINTERS = [0, 8, 0xFFF, 0x10000, 0x7FFFFFFFF000, 0x800000000000, 0x8000000000000000,
                0xFFFF888000000000, 0xFFFFFFFF81000000, 0xFFFFFFFFFFFFF000, (1 << 64) - 1]


class Arena:
    """Where argument buffers live: PAGES read-write pages, a PROT_NONE guard, a read-only
    page.  A kernel that reads or writes past a buffer faults in the guard instead of
    corrupting the fuzzer; a buffer "cut" ends inside the guard."""

    PAGES = 24

    def __init__(self) -> None:
        self.libc = libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        addr = self.mmap((self.PAGES + 2) * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if addr < 0:
            raise OSError(-addr, "mmap of the fuzz arena")
        self.base = addr
        self.zeros = bytes(self.PAGES * PAGE)
        self.guard = self.base + self.PAGES * PAGE
        self.ro = self.guard + PAGE
        ffi.memmove(ffi.cast("char *", self.ro), b"\xff" * PAGE, PAGE)
        if libc.mprotect(self.ro, PAGE, mmap.PROT_READ) or libc.mprotect(self.guard, PAGE, 0):
            raise OSError(ctypes.get_errno(), "mprotect of the fuzz arena")

    def mmap(self, size: int, prot: int, flags: int, fd: int, offset: int) -> int:
        """libc's mmap: the address, or -errno."""
        addr = self.libc.mmap(None, size, prot, flags, fd, offset)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return -ctypes.get_errno()
        return int(addr)

    def munmap(self, addr: int, size: int) -> None:
        self.libc.munmap(addr, size)

    def pointer(self, a: Arg, mem_base: int, write: bool = True) -> int:
        """Where the argument goes, after copying it there (unless not `write`: an ioctl's
        output is read back from the same place)."""
        if a.kind == "bad":
            return {"guard": self.guard, "ro": self.ro, "": 0}[a.rel] + a.value
        data = bytearray(a.data)
        for off, mem_off in a.patch:
            if off + 8 <= len(data):
                data[off:off + 8] = (mem_base + mem_off).to_bytes(8, "little")
        if a.cut:  # the last `misalign` bytes (at least 1) lie in the guard page
            keep = min(max(0, len(data) - max(a.misalign, 1)), self.PAGES * PAGE)
            data = data[:keep]
            start = self.guard - keep
        else:
            start = self.base + a.misalign
            data = data[: self.PAGES * PAGE - a.misalign]
        if write:
            # no stale bytes past the buffer: a kernel reading more than it was given must
            # see the same (zeros) on both devices of a differential batch
            ffi.memmove(ffi.cast("char *", self.base), self.zeros, self.PAGES * PAGE)
            if data:
                ffi.memmove(ffi.cast("char *", start), bytes(data), len(data))
        return start


# --- generating calls ---------------------------------------------------------------

def ctype_size(ctype: str) -> int:
    return int(ffi.sizeof(ctype))


def int_fields(ctype: Any, base: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of every integer field of a struct type, arrays' elements included."""
    out: list[tuple[int, int]] = []
    if ctype.kind == "primitive":
        return [(base, ffi.sizeof(ctype))]
    if ctype.kind == "array":
        item = ctype.item
        n = ctype.length
        for i in range(min(n, 16)):
            out += int_fields(item, base + i * ffi.sizeof(item))
        return out
    if ctype.kind == "struct" or ctype.kind == "union":
        for _name, f in ctype.fields:
            out += int_fields(f.type, base + f.offset)
    return out


_FIELDS: dict[str, list[tuple[int, int]]] = {}


def mutate(rng: random.Random, ctype: str, base: bytes) -> bytes:
    """`base` with a few integer fields set to boundary or random values."""
    if ctype not in _FIELDS:
        _FIELDS[ctype] = int_fields(ffi.typeof(ctype))
    fields = _FIELDS[ctype]
    data = bytearray(base)
    style = rng.random()
    if style < 0.08:
        return bytes(len(data))
    if style < 0.14:
        return rng.randbytes(len(data))
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3, 6))):
        off, size = rng.choice(fields)
        data[off:off + size] = boundary(rng, size * 8).to_bytes(size, "little")
    return bytes(data)


def real_mode_regs(entry: int) -> bytes:
    r = ffi.new("struct kvmp_regs *")
    r.rip, r.rflags, r.rsp = entry, 2, 0x7000
    return bytes(ffi.buffer(r))


def real_mode_sregs() -> bytes:
    s = ffi.new("struct kvmp_sregs *")
    for seg in (s.cs, s.ds, s.es, s.fs, s.gs, s.ss):
        seg.limit, seg.present, seg.s, seg.type = 0xFFFF, 1, 1, 3
    s.cs.type = 0xB
    s.tr.limit, s.tr.present, s.tr.type = 0xFFFF, 1, 0xB
    s.ldt.limit, s.ldt.present, s.ldt.type = 0xFFFF, 1, 2
    s.gdt.limit = s.idt.limit = 0xFFFF
    s.cr0 = 0x60000010
    s.apic_base = 0xFEE00900
    return bytes(ffi.buffer(s))


class Gen:
    """Draws calls from the seed's generator; `fd` picks the fd type (None: the ioctl's)."""

    def __init__(self, rng: random.Random, msr_indices: list[int], mem_size: int) -> None:
        self.rng = rng
        self.msrs = sorted(set(MSRS) | set(msr_indices))
        self.mem_size = mem_size

    def count(self) -> int:
        return self.rng.choice((0, 1, 2, 3, 7, 8, 32, 63, 64, 100, 255, 256, 257, 1000,
                                0x7FFFFFFF, 0xFFFFFFFF, self.rng.randrange(512)))

    def buf(self, data: bytes, patch: list[tuple[int, int]] | None = None) -> Arg:
        r = self.rng.random()
        if r < 0.06:
            return Arg("bad", value=self.rng.choice(BAD_POINTERS))
        if r < 0.09:
            return Arg("bad", rel=self.rng.choice(("guard", "ro")),
                       value=self.rng.choice((0, 1, 8, PAGE - 8)))
        cut = r < 0.15
        misalign = self.rng.choice((1, 3, 4, 7, 8)) if cut or r < 0.2 else 0
        return Arg("buf", data=data, cut=cut, misalign=misalign, patch=patch or [])

    def varlen(self, header_len: int, fill: Callable[[int], bytes]) -> Arg:
        """A count field (first u32) and up to 300 entries, not always as many as it says."""
        n = self.count()
        present = min(n if self.rng.random() < 0.7 else self.rng.randrange(300), 300)
        hdr = bytearray(header_len)
        hdr[0:4] = (n & 0xFFFFFFFF).to_bytes(4, "little")
        if header_len == 8 and self.rng.random() < 0.1:
            hdr[4:8] = self.rng.getrandbits(32).to_bytes(4, "little")
        # a few distinct entries, repeated: long lists cost the kernel, not Python
        distinct = [fill(i) for i in range(min(present, 6))]
        body = b"".join(distinct[i % len(distinct)] for i in range(present)) if distinct else b""
        return self.buf(bytes(hdr) + body)

    def msr_entry(self, _i: int) -> bytes:
        e = ffi.new("struct kvmp_msr_entry *")
        e.index = self.rng.choice(self.msrs) if self.rng.random() < 0.9 else \
            self.rng.getrandbits(32)
        e.data = boundary(self.rng, 64)
        return bytes(ffi.buffer(e))

    def cpuid_entry(self, _i: int) -> bytes:
        e = ffi.new("struct kvmp_cpuid_entry2 *")
        e.function = self.rng.choice((0, 1, 7, 0xD, 0x80000000, 0x80000001, 0x80000008,
                                      0x40000000, self.rng.getrandbits(32)))
        e.index = self.rng.choice((0, 1, self.rng.getrandbits(32)))
        e.flags = self.rng.choice((0, 0, 1, self.rng.getrandbits(32)))
        e.eax, e.ebx = boundary(self.rng, 32), boundary(self.rng, 32)
        e.ecx, e.edx = boundary(self.rng, 32), boundary(self.rng, 32)
        return bytes(ffi.buffer(e))

    def region(self) -> Arg:
        rng = self.rng
        r = ffi.new("struct kvmp_userspace_memory_region *")
        r.slot = rng.choice((0, 1, 2, 3, 31, 32, 33, 0x10000, 0x10001, 0x7FFF,
                             rng.getrandbits(32)))
        r.flags = rng.choice((0, 0, 0, 1, 2, 4, rng.getrandbits(32)))
        pages = self.mem_size // PAGE
        r.guest_phys_addr = rng.choice((0, 0x1000, 0x8000, 0x10000, 0x100000, 0xFEE00000,
                                        1 << 32, 1 << 40, (1 << 48) - PAGE, 1 << 52,
                                        (1 << 64) - PAGE, rng.randrange(64) * PAGE,
                                        boundary(rng, 64)))
        size_pages = rng.choice((0, 1, 2, pages // 2, pages, rng.randrange(1, pages + 1)))
        r.memory_size = size_pages * PAGE if rng.random() < 0.85 else rng.choice(
            (PAGE - 1, 0x1800, 1 << 43, 1 << 40, (1 << 31) * PAGE, (1 << 64) - PAGE,
             boundary(rng, 64)))
        data = bytes(ffi.buffer(r))
        off = ffi.offsetof("struct kvmp_userspace_memory_region", "userspace_addr")
        if rng.random() < 0.8:
            mem_off = rng.randrange(0, pages) * PAGE + (8 if rng.random() < 0.05 else 0)
            return self.buf(data, patch=[(off, mem_off)])
        d = bytearray(data)
        d[off:off + 8] = rng.choice(BAD_POINTERS[1:]).to_bytes(8, "little")
        return self.buf(bytes(d))

    def dirty_log(self) -> Arg:
        """A slot (ours, Linux's, another address space) and a bitmap pointer that faults:
        a slot may be up to 2^31 pages, so a valid pointer could let either kernel write
        its bitmap over the fuzzer's own memory (tests/guests/test_dirty_log.py covers
        the copies that succeed)."""
        rng = self.rng
        log = ffi.new("struct kvmp_dirty_log *")
        log.slot = rng.choice((0, 1, 2, 31, 32, 32763, 32764, 0x10000, 0x20000,
                               rng.getrandbits(32)))
        log.dirty_bitmap = rng.choice(BAD_POINTERS)
        return self.buf(bytes(ffi.buffer(log)))

    def call(self, fd: str | None = None, name: str | None = None,
             names: list[str] | None = None) -> Call:
        """A call; `names` (the differential's) also keeps unknown numbers to UNKNOWN, where
        a random number could be an ioctl kvm_amd has and kvmport has not."""
        rng = self.rng
        if name is None:
            if rng.random() < 0.03:
                req = rng.choice(UNKNOWN) if names or rng.random() < 0.6 else \
                    rng.getrandbits(32)
                return Call(fd or rng.choice(("sys", "vm", "vcpu")), "UNKNOWN", req,
                            self.intarg())
            name = rng.choice(names or list(IOCTLS))
        home, argtype = IOCTLS[name]
        if fd is None:
            fd = home if rng.random() < 0.93 else rng.choice(("sys", "vm", "vcpu"))
        return Call(fd, name, NUMBER[name], self.arg(name, argtype))

    def intarg(self) -> Arg:
        rng = self.rng
        return Arg("int", value=rng.choice((0, 0, 0, 1, 2, 3, 4, 31, 32, 255, 256, 1023, 1024,
                                            4095, 4096, 0xFFFFFFFF, 1 << 32, (1 << 64) - 1,
                                            rng.getrandbits(64), rng.randrange(300))))

    def arg(self, name: str, argtype: str) -> Arg:
        rng = self.rng
        if argtype == "int":
            if name == "CHECK_EXTENSION" and rng.random() < 0.6:
                return Arg("int", value=rng.choice((0, 1, 3, 4, 7, 9, 10, 14, 16, 22, 31, 40,
                                                    55, 66, 128, 136, 0x4B500001, 0x4B500000,
                                                    0x7FFF0000)))
            if name == "SET_TSS_ADDR" and rng.random() < 0.6:
                return Arg("int", value=rng.choice((0xFFFBD000, 0xFEFFD000, 0, 0xFFFFF000,
                                                    0xFFFFE000, 1 << 32)))
            if name == "CREATE_VM":
                return Arg("int", value=0 if rng.random() < 0.8 else rng.choice((1, 2, 77)))
            return self.intarg()
        if argtype == "u64":
            return self.buf(boundary(rng, 64).to_bytes(8, "little"))
        if argtype == "region":
            return self.region()
        if argtype == "dirty_log":
            return self.dirty_log()
        if argtype == "msr_list":
            return self.varlen(ffi.offsetof("struct kvmp_msr_list", "indices"),
                               lambda _i: rng.getrandbits(32).to_bytes(4, "little"))
        if argtype == "msrs":
            return self.varlen(ffi.offsetof("struct kvmp_msrs", "entries"), self.msr_entry)
        if argtype == "cpuid2":
            return self.varlen(ffi.offsetof("struct kvmp_cpuid2", "entries"), self.cpuid_entry)
        ctype = argtype
        if name == "SET_REGS" and rng.random() < 0.7:
            base = real_mode_regs(rng.choice(ENTRIES))
        elif name == "SET_SREGS" and rng.random() < 0.7:
            base = real_mode_sregs()
        else:
            base = bytes(ctype_size(ctype))
        return self.buf(mutate(rng, ctype, base))


# --- the fuzzer ---------------------------------------------------------------------

class Failure(Exception):
    pass


@dataclass
class Vcpu:
    fd: int
    run: Any  # struct kvmp_run * in a mapping that outlives the fd
    tid: int | None = None


@dataclass
class Vm:
    fd: int
    vcpus: list[Vcpu] = field(default_factory=list)


class Fuzzer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.calls = 0
        # formatted only when shown: (call number, text) or (call number, fd, Call, outcome)
        self.log: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=args.log)
        self.findings: list[str] = []
        self.arena = Arena()
        self.mem_size = 1 << 20
        self.mem = mmap.mmap(-1, self.mem_size + PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.mem_base = int(ffi.cast("uintptr_t", ffi.from_buffer(self.mem)))
        self.maps: list[tuple[int, int]] = []  # run areas (address, size) until episode end
        self.outcomes: collections.Counter[str] = collections.Counter()
        lib.kvmp_install_kick_handler(KICK)
        self.mem[0x8000:0x8000 + len(GUEST)] = GUEST
        # every real-mode vector (injected interrupts, NMIs, exceptions) at an IRET
        self.mem[0x8030] = 0xCF
        self.mem[0:0x400] = (0x8030).to_bytes(4, "little") * 256
        self.run_cond = threading.Condition()
        self.running: dict[int, tuple[Any, float]] = {}  # thread ident -> (run area, deadline)
        self.stop = threading.Event()

    # -- low level
    def note(self, text: str) -> None:
        self.calls += 1
        self.log.append((self.calls, text))

    def lines(self) -> list[str]:
        return [f"{e[0]:7d} {e[1]}" if len(e) == 2 else
                f"{e[0]:7d} fd{e[1]} {e[2].describe()} -> {e[3]}" for e in list(self.log)]

    def ioctl(self, fd: int, call: Call) -> int:
        a = call.arg
        if a.kind == "int":
            ret = int(lib.kvmp_ioctl_int(fd, call.request, a.value))
        else:
            ptr = self.arena.pointer(a, self.mem_base)
            ret = int(lib.kvmp_ioctl_ptr(fd, call.request, ffi.cast("void *", ptr)))
        outcome = "ok" if ret >= 0 else errno.errorcode.get(-ret, str(-ret))
        self.calls += 1
        self.log.append((self.calls, fd, call, outcome))
        self.outcomes[f"{call.name} {outcome}"] += 1
        return ret

    def settle(self, call: Call, ret: int) -> None:
        """What a call made that nobody tracks goes at once: a new VM or VCPU fd, a run area
        KVMP_MMAP_VCPU mapped (either would keep its VM, and SVM, alive)."""
        if ret < 0:
            return
        if call.name in ("CREATE_VM", "CREATE_VCPU"):
            self.close(ret, "new fd")
        elif call.name == "MMAP_VCPU" and call.arg.kind == "buf":
            out = ffi.cast("struct kvmp_mmap_vcpu *",
                           self.arena.pointer(call.arg, self.mem_base, write=False))
            self.arena.munmap(int(out.addr), int(out.size))

    def settled_ioctl(self, fd: int, call: Call) -> None:
        self.settle(call, self.ioctl(fd, call))

    def open_dev(self, device: str) -> int:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        self.note(f"open {device} -> fd{fd}")
        return fd

    def close(self, fd: int, what: str) -> None:
        os.close(fd)
        self.note(f"close {what} fd{fd}")

    def map_run(self, fd: int, device: str) -> Any:
        """The run area by mmap, or (kvmport, sometimes) by KVMP_MMAP_VCPU; the mapping
        stays until the episode ends, whatever happens to the fd."""
        if device == KVMPORT and self.rng.random() < 0.3:
            req = ffi.new("struct kvmp_mmap_vcpu *")
            ret = int(lib.kvmp_ioctl_ptr(fd, NUMBER["MMAP_VCPU"], req))
            self.note(f"fd{fd} MMAP_VCPU -> {ret}")
            if ret >= 0:
                self.maps.append((int(req.addr), int(req.size)))
                return ffi.cast("struct kvmp_run *", req.addr)
        addr = self.arena.mmap(PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        self.note(f"mmap vcpu fd{fd} -> {addr:#x}")
        if addr < 0:
            raise Failure(f"mmap of a new VCPU's run area: {os.strerror(-addr)}")
        self.maps.append((addr, PAGE))
        return ffi.cast("struct kvmp_run *", addr)

    def odd_mmap(self, fd: int) -> None:
        """mmap of a fd with odd sizes, offsets, flags; never touched, unmapped at once."""
        rng = self.rng
        size = rng.choice((1, PAGE, 2 * PAGE, 3 * PAGE, 64 * PAGE))
        offset = rng.choice((0, 0, PAGE, 2 * PAGE, 1 << 30, (1 << 63) - PAGE))
        flags = rng.choice((mmap.MAP_SHARED, mmap.MAP_PRIVATE))
        prot = rng.choice((mmap.PROT_READ, mmap.PROT_READ | mmap.PROT_WRITE,
                           mmap.PROT_READ | mmap.PROT_EXEC, 0))
        addr = self.arena.mmap(size, prot, flags, fd, offset)
        if addr >= 0:
            self.arena.munmap(addr, size)
        outcome = "ok" if addr >= 0 else errno.errorcode.get(-addr, str(-addr))
        self.note(f"mmap fd{fd} size {size:#x} offset {offset:#x} flags {flags} prot {prot}"
                  f" -> {outcome}")
        self.outcomes[f"mmap {outcome}"] += 1

    # -- KVM_RUN, always bounded: the kicker thread stops any run past its deadline
    def kicker(self) -> None:
        """Kicks (immediate_exit, then the signal, again until it leaves) every thread in
        KVM_RUN past its deadline; sleeps until the earliest deadline."""
        while not self.stop.is_set():
            with self.run_cond:
                now = time.monotonic()
                late = [(t, r) for t, (r, d) in self.running.items() if now >= d]
                if not late:
                    wait = min((d for _, d in self.running.values()), default=now + 1) - now
                    self.run_cond.wait(max(wait, 0.0005))
                    continue
                # under the lock: a runner cannot leave, and its run area go, meanwhile
                for t, run in late:
                    run.immediate_exit = 1
                    try:
                        signal.pthread_kill(t, KICK)
                    except ProcessLookupError:
                        pass
            time.sleep(0.0005)

    def set_deadline(self, ident: int | None, run: Any, deadline: float) -> None:
        with self.run_cond:
            if ident is not None and (ident in self.running or deadline > 0):
                self.running[ident] = (run, deadline)
            self.run_cond.notify()

    def kvm_run(self, v: Vcpu, budget: float) -> int:
        me = threading.get_ident()
        v.run.immediate_exit = 0
        self.set_deadline(me, v.run, time.monotonic() + budget)
        try:
            ret = int(lib.kvmp_ioctl_int(v.fd, NUMBER["RUN"], 0))
        finally:
            with self.run_cond:
                del self.running[me]
        return ret

    def run_guest(self, vm: Vm, v: Vcpu) -> None:
        """Up to a few KVM_RUNs, from a fresh real-mode entry or from what the fuzz left."""
        rng = self.rng
        # without --wild, always from a fresh real-mode entry: random leftover state froze
        # the lab's emulated CPU (kvm_amd and kvmport alike; docs/lab.md, "Fuzzing")
        if rng.random() < 0.6 or not self.args.wild:
            for name, data in (("SET_SREGS", real_mode_sregs()),
                               ("SET_REGS", real_mode_regs(rng.choice(ENTRIES)))):
                self.ioctl(v.fd, Call("vcpu", name, NUMBER[name], Arg("buf", data=data)))
        if rng.random() < 0.2:
            v.run.request_interrupt_window = 1
        for _ in range(rng.randrange(1, 6)):
            ret = self.kvm_run(v, rng.choice((0.0005, 0.001, 0.004)))
            reason = int(v.run.exit_reason) if ret >= 0 else -1
            outcome = f"exit {reason}" if ret >= 0 else errno.errorcode.get(-ret, str(-ret))
            self.note(f"fd{v.fd} RUN -> {outcome}")
            self.outcomes[f"RUN {outcome}"] += 1
            if ret < 0 and -ret != errno.EINTR:
                break

    def race(self, dev: str, sys_fd: int, vm: Vm, v: Vcpu, gen: Gen) -> int:
        """While a thread is in KVM_RUN (a guest only a kick stops), another closes a fd or
        calls an ioctl; then the runner is kicked.  Returns the sys fd (-1 if closed)."""
        rng = self.rng
        for name, data in (("SET_SREGS", real_mode_sregs()),
                           ("SET_REGS", real_mode_regs(0x8008))):
            self.ioctl(v.fd, Call("vcpu", name, NUMBER[name], Arg("buf", data=data)))
        result: list[int] = []
        runner = threading.Thread(target=lambda: result.append(self.kvm_run(v, 3600)))
        runner.start()
        time.sleep(rng.choice((0, 0.001, 0.003)))
        what = rng.choice(("close vcpu", "close vm", "close sys", "slot", "ioctl vcpu",
                           "ioctl vm", "ioctl vcpu", "run again"))
        helper: threading.Thread | None = None
        if what == "close vcpu":
            self.close(v.fd, "vcpu (in KVM_RUN)")
            vm.vcpus.remove(v)
        elif what == "close vm" and vm.fd >= 0:
            self.close(vm.fd, "vm (its vcpu in KVM_RUN)")
            vm.fd = -1
        elif what == "close sys" and sys_fd >= 0:
            self.close(sys_fd, "sys (a vcpu in KVM_RUN)")
            sys_fd = -1
        elif what == "slot" and vm.fd >= 0:
            self.ioctl(vm.fd, gen.call("vm", "SET_USER_MEMORY_REGION"))
        elif what == "close sys" or what == "slot":
            pass  # nothing left to close or change: the runner is just kicked
        elif what in ("ioctl vcpu", "run again"):
            call = gen.call("vcpu") if what == "ioctl vcpu" else Call(
                "vcpu", "RUN", NUMBER["RUN"], Arg("int"))
            if call.name == "RUN":
                helper = threading.Thread(target=lambda: self.kvm_run(v, 0.01))
            else:
                helper = threading.Thread(target=self.settled_ioctl, args=(v.fd, call))
            helper.start()
        elif what == "ioctl vm" and vm.fd >= 0:
            helper = threading.Thread(target=self.settled_ioctl, args=(vm.fd, gen.call("vm")))
            helper.start()
        time.sleep(rng.choice((0.001, 0.003, 0.01)))
        t_end = time.monotonic() + self.args.stall
        while runner.is_alive() and time.monotonic() < t_end:
            # the runner may not have registered yet: again until it leaves
            with self.run_cond:
                if runner.ident in self.running:
                    self.running[runner.ident] = (v.run, 0.0)
                    self.run_cond.notify()
            runner.join(0.002)
        if helper is not None:
            helper.join(self.args.stall)
        self.note(f"race {what}: run -> {result}")
        return sys_fd

    # -- chaos: one episode on one device
    def episode(self, dev: str, steps: int) -> None:
        rng = self.rng
        sys_fd = self.open_dev(dev)
        gen = Gen(rng, self.msr_indices(dev), self.mem_size)
        vms: list[Vm] = []
        try:
            for _ in range(steps):
                if self.calls >= self.args.calls:
                    break
                r = rng.random()
                live_vcpus = [(vm, v) for vm in vms for v in vm.vcpus]
                if sys_fd < 0 and r < 0.5:
                    sys_fd = self.open_dev(dev)
                elif (r < 0.04 or not vms) and len(vms) < 3 and sys_fd >= 0:
                    ret = self.ioctl(sys_fd, Call("sys", "CREATE_VM", NUMBER["CREATE_VM"],
                                                  Arg("int")))
                    if ret >= 0:
                        vm = Vm(ret)
                        vms.append(vm)
                        self.ioctl(vm.fd, self.slot0())
                    elif not vms:
                        break  # EBUSY (the other hypervisor has SVM) or the like
                elif r < 0.09 and vms:
                    vm = rng.choice(vms)
                    if vm.fd >= 0 and len(vm.vcpus) < 3:
                        ret = self.ioctl(vm.fd, Call("vm", "CREATE_VCPU", NUMBER["CREATE_VCPU"],
                                                     Arg("int", value=rng.choice((0, 1, 2, 7,
                                                                                  rng.randrange(
                                                                                      1024))))))
                        if ret >= 0:
                            vm.vcpus.append(Vcpu(ret, self.map_run(ret, dev)))
                elif r < 0.11 and (vms or live_vcpus):
                    self.close_something(vms)
                elif r < 0.13:
                    fd = rng.choice([sys_fd] + [vm.fd for vm in vms] +
                                    [v.fd for _, v in live_vcpus])
                    if fd >= 0:
                        self.odd_mmap(fd)
                elif r < 0.20 and live_vcpus:
                    vm, v = rng.choice(live_vcpus)
                    self.run_guest(vm, v)
                elif r < 0.22 and live_vcpus:
                    vm, v = rng.choice(live_vcpus)
                    sys_fd = self.race(dev, sys_fd, vm, v, gen)
                else:
                    call = gen.call()
                    fds = {"sys": [sys_fd], "vm": [vm.fd for vm in vms],
                           "vcpu": [v.fd for _, v in live_vcpus]}[call.fd]
                    fds = [f for f in fds if f >= 0]
                    if not fds:
                        continue
                    if call.name == "RUN":
                        pair = next(((vm, v) for vm, v in live_vcpus if v.fd in fds), None)
                        if pair:
                            self.run_guest(*pair)
                        continue
                    fd = rng.choice(fds)
                    ret = self.ioctl(fd, call)
                    if call.name == "CREATE_VM" and ret >= 0:
                        self.close(ret, "new vm")
                    elif call.name == "CREATE_VCPU" and ret >= 0:
                        owner = next((vm for vm in vms if vm.fd == fd), None)
                        if owner is not None:
                            owner.vcpus.append(Vcpu(ret, self.map_run(ret, dev)))
                        else:
                            self.close(ret, "new vcpu")
                    elif call.name == "MMAP_VCPU" and ret >= 0 and call.arg.kind == "buf":
                        p = self.arena.pointer(call.arg, self.mem_base, write=False)
                        out = ffi.cast("struct kvmp_mmap_vcpu *", p)
                        self.maps.append((int(out.addr), int(out.size)))
        finally:
            for vm in vms:
                for v in vm.vcpus:
                    self.close(v.fd, "vcpu (episode end)")
                if vm.fd >= 0:
                    self.close(vm.fd, "vm (episode end)")
            if sys_fd >= 0:
                self.close(sys_fd, "sys (episode end)")
            for addr, size in self.maps:
                self.arena.munmap(addr, size)
            self.maps.clear()

    def close_something(self, vms: list[Vm]) -> None:
        vm = self.rng.choice(vms)
        if vm.vcpus and self.rng.random() < 0.6:
            v = self.rng.choice(vm.vcpus)
            vm.vcpus.remove(v)
            self.close(v.fd, "vcpu")
        elif vm.fd >= 0:
            # its VCPU fds stay open (and usable) after the VM fd goes
            self.close(vm.fd, "vm (vcpus stay open)")
            vm.fd = -1

    def slot0(self) -> Call:
        r = ffi.new("struct kvmp_userspace_memory_region *")
        r.memory_size, r.userspace_addr = self.mem_size, self.mem_base
        return Call("vm", "SET_USER_MEMORY_REGION", NUMBER["SET_USER_MEMORY_REGION"],
                    Arg("buf", data=bytes(ffi.buffer(r))))

    _msr_cache: dict[str, list[int]] = {}  # noqa: RUF012

    def msr_indices(self, dev: str) -> list[int]:
        if dev not in self._msr_cache:
            from pyhost import Kvm

            with Kvm(dev) as kvm:
                self._msr_cache[dev] = kvm.get_msr_index_list()
                LIST_LENGTHS[dev] = {"msrs": len(self._msr_cache[dev]),
                                     "cpuid": len(kvm.get_supported_cpuid(256))}
        return self._msr_cache[dev]

    # -- differential: the same batch on both devices, outcomes compared
    DIFF_NAMES: ClassVar[list[str]] = [n for n in IOCTLS if n not in ("RUN", "CREATE_VM")]

    def differential(self, size: int) -> None:
        rng = self.rng
        gen = Gen(rng, self.msr_indices(LINUX), self.mem_size)
        self.msr_indices(KVMPORT)
        batch: list[Call] = []
        for _ in range(size):
            call = gen.call(names=self.DIFF_NAMES)
            if call.name in ("RUN", "CREATE_VM"):
                continue
            if call.fd == "vcpu" and rng.random() < 0.1:
                call.fd = "vcpu2"  # a second VCPU, which never ran
            batch.append(call)
        results = {dev: self.replay(dev, batch) for dev in (LINUX, KVMPORT)}
        for i, call in enumerate(batch):
            a, b = results[LINUX][i], results[KVMPORT][i]
            if a == b:
                continue
            if any(n == call.name and pred(call) and want in (None, b)
                   for n, pred, want, _ in ALLOWED):
                self.outcomes["allowed differences"] += 1
                if call.name.startswith(("SET_", "CREATE_")) and "ok" in (a, b):
                    break  # the devices' states now differ: later calls may too
                continue
            self.findings.append(f"{call.describe(full=True)}: kvm_amd {a}, kvmport {b} "
                                 f"(call {i} of a differential batch ending at call "
                                 f"{self.calls})")
            break  # later calls of the batch may differ only because this one did

    def replay(self, dev: str, batch: list[Call]) -> list[str]:
        sys_fd = self.open_dev(dev)
        out: list[str] = []
        fds: dict[str, int] = {"sys": sys_fd}
        try:
            vm_fd = self.ioctl(sys_fd, Call("sys", "CREATE_VM", NUMBER["CREATE_VM"], Arg("int")))
            if vm_fd < 0:
                raise Failure(f"differential: CREATE_VM on {dev}: {os.strerror(-vm_fd)}")
            fds["vm"] = vm_fd
            self.ioctl(vm_fd, self.slot0())
            for name, vid in (("vcpu", 0), ("vcpu2", 1)):
                fds[name] = self.ioctl(vm_fd, Call("vm", "CREATE_VCPU", NUMBER["CREATE_VCPU"],
                                                   Arg("int", value=vid)))
            for call in batch:
                ret = self.ioctl(fds[call.fd], call)
                out.append("ok" if ret >= 0 else errno.errorcode.get(-ret, str(-ret)))
                self.settle(call, ret)
        finally:
            for name in ("vcpu2", "vcpu", "vm", "sys"):
                if fds.get(name, -1) >= 0:
                    self.close(fds[name], name)
        return out

    # -- the run
    def main(self) -> None:
        rng = self.rng
        devices = self.args.device
        diff = LINUX in devices and KVMPORT in devices and not self.args.no_differential
        t0, shown = time.monotonic(), 0
        while self.calls < self.args.calls:
            if self.calls // 10_000 > shown:
                shown = self.calls // 10_000
                print(f"fuzz: {self.calls} calls, {time.monotonic() - t0:.0f} s", flush=True)
            if diff and rng.random() < self.args.diff_share:
                self.differential(rng.randrange(20, 80))
            else:
                self.episode(rng.choice(self.args.chaos_device), rng.randrange(50, 400))
            if self.findings and not self.args.keep_going:
                return


def watchdog(fz: Fuzzer, stall: float) -> None:
    last, since = -1, time.monotonic()
    while not fz.stop.is_set():
        time.sleep(1)
        if fz.calls != last:
            last, since = fz.calls, time.monotonic()
            continue
        if time.monotonic() - since < stall:
            continue
        print(f"fuzz: HANG: no call finished for {stall:.0f} s (seed {fz.args.seed}); "
              "thread kernel stacks:", flush=True)
        for tid in sorted(os.listdir("/proc/self/task")):
            d = f"/proc/self/task/{tid}"
            try:
                state = Path(f"{d}/stat").read_text().split(")")[1].split()[0]
                stack = Path(f"{d}/stack").read_text()
            except OSError as e:
                state, stack = "?", f"(no stack: {e})"
            print(f"--- task {tid} state {state}\n{stack}", flush=True)
        print_log(fz)
        try:
            Path("/proc/sysrq-trigger").write_text("l")  # every CPU's backtrace
        except OSError:
            pass
        time.sleep(2)
        os._exit(3)


def print_log(fz: Fuzzer) -> None:
    print(f"fuzz: the last {len(fz.log)} calls of seed {fz.args.seed}:", flush=True)
    for line in fz.lines():
        print("   ", line)
    print(f"fuzz: reproduce: python3 -m lab.fuzz {reproduce_args(fz.args)}", flush=True)


def reproduce_args(a: argparse.Namespace) -> str:
    devs = " ".join([f"--device {d}" for d in a.device] +
                    [f"--chaos-device {d}" for d in a.chaos_device])
    return f"--seed {a.seed} --calls {a.calls} {devs}" + (
        " --no-differential" if a.no_differential else "") + (" --wild" if a.wild else "")


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout \
        .splitlines()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m lab.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--calls", type=int, default=100_000, help="calls (ioctl, mmap, close, ...)")
    p.add_argument("--device", action="append", default=None,
                   help="device to fuzz, repeatable (default: /dev/kvm and /dev/kvmport)")
    p.add_argument("--chaos-device", action="append", default=None,
                   help="device(s) of the chaos episodes (default: /dev/kvmport if given, "
                   "else the devices): kvm_amd froze a lab CPU once (docs/lab.md)")
    p.add_argument("--wild", action="store_true",
                   help="KVM_RUN also from whatever register state the fuzz left "
                   "(froze the lab's emulated CPU, with kvm_amd too)")
    p.add_argument("--no-differential", action="store_true")
    p.add_argument("--diff-share", type=float, default=0.3,
                   help="share of rounds that are differential batches")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first finding")
    p.add_argument("--stall", type=float, default=60, help="seconds without progress = hang")
    p.add_argument("--log", type=int, default=60, help="calls to show after a failure")
    p.add_argument("--rmmod", action="store_true",
                   help="rmmod kvmport at the end and require its 'no leaks'")
    a = p.parse_args(argv)
    a.device = a.device or [d for d in (LINUX, KVMPORT) if os.path.exists(d)]
    if not a.device:
        p.error("no device: load kvm_amd or kvmport")
    a.chaos_device = a.chaos_device or ([KVMPORT] if KVMPORT in a.device else a.device)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mark = len(dmesg())
    fz = Fuzzer(args)
    threading.Thread(target=watchdog, args=(fz, args.stall), daemon=True).start()
    kicker = threading.Thread(target=fz.kicker, daemon=True)
    kicker.start()
    print(f"fuzz: seed {args.seed}, {args.calls} calls on {', '.join(args.device)} "
          f"(chaos on {', '.join(args.chaos_device)})", flush=True)
    t0 = time.monotonic()
    error = ""
    try:
        fz.main()
    except Exception as e:  # the fuzzer's own surprise: show where, with the seed
        import traceback

        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
    fz.stop.set()
    with fz.run_cond:
        fz.run_cond.notify_all()
    kicker.join(5)  # before the run areas are unmapped at exit
    took = time.monotonic() - t0
    print(f"fuzz: seed {args.seed}: {fz.calls} calls in {took:.1f} s "
          f"({fz.calls / max(took, 1e-9):.0f} calls/s), {len(fz.findings)} findings, "
          f"{fz.outcomes['allowed differences']} allowed differences", flush=True)
    if args.rmmod and os.path.exists("/sys/module/kvmport"):
        subprocess.run(["rmmod", "kvmport"], check=True)
    new = dmesg()[mark:]
    bad = [ln for ln in new if BAD_DMESG.search(ln)]
    if args.rmmod and not any("kvmport: no leaks" in ln for ln in new):
        bad.append("rmmod kvmport did not print 'kvmport: no leaks'")
    print("fuzz: outcomes: " + ", ".join(f"{k} {n}" for k, n in sorted(fz.outcomes.items())),
          flush=True)
    for f in fz.findings:
        print(f"fuzz: FINDING: {f}", flush=True)
    for ln in bad:
        print(f"fuzz: KERNEL: {ln}", flush=True)
    if error:
        print(f"fuzz: ERROR: {error}", flush=True)
    if fz.findings or bad or error:
        print_log(fz)
        return 1
    print(f"fuzz: seed {args.seed}: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
