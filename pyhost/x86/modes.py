"""Put a fresh VCPU into real, 32-bit protected or 64-bit long mode.

Protected and long mode need structures in guest memory; they go in low
memory, below the default load address (LOAD_ADDRESS):
  GDT at 0x1000: 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code
  PML4 at 0x2000, PDPT at 0x3000, PD at 0x4000: the first 1 GiB identity-mapped
  with 2 MiB pages (addresses no slot backs become MMIO exits)
  IDT at 0x5000 (real mode: the IVT at 0) whose every vector leads to a stub
  at TRAP_STUBS + 4 * vector that halts with interrupts off: until the guest
  loads its own IDT, an exception stops it with every register intact, and
  `trapped_exception()` tells the vector and where it happened.  (A triple
  fault would not do: after one, Linux's kvm_amd resets the VCPU, kvm_intel
  does not.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

from ..vcpu import Vcpu
from ..vm import Vm

Mode = Literal["real", "protected", "long"]
MODES: tuple[Mode, ...] = ("real", "protected", "long")

LOAD_ADDRESS = 0x8000
STACK_TOP = 0x8000  # grows down, below the code
GDT_ADDRESS = 0x1000
PML4_ADDRESS = 0x2000
SEL_CODE32, SEL_DATA, SEL_CODE64 = 0x08, 0x10, 0x18
IDT_ADDRESS = 0x5000
TRAP_STUBS = 0x6000
TRAP_STUB = bytes((0xF4, 0xEB, 0xFD, 0x90))  # 1: hlt; jmp 1b; (pad)
LOW_STRUCTURES_END = 0x7000
# exceptions whose frame carries an error code (not in real mode)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
EXCEPTION_NAMES = ("DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "MP", "TS", "NP",
                   "SS", "GP", "PF", "15", "MF", "AC", "MC", "XM", "VE", "CP")

CR0_PE, CR0_ET, CR0_PG = 1 << 0, 1 << 4, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_RESERVED = 1 << 1


def _descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte GDT descriptor; flags is the high nibble (G, D/B, L, AVL)."""
    return struct.pack(
        "<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
        ((limit >> 16) & 0xF) | (flags << 4), (base >> 24) & 0xFF,
    )


GDT = b"".join((
    bytes(8),
    _descriptor(0, 0xFFFFF, 0x9B, 0xC),  # code32: present, ring 0, exec/read, G, D
    _descriptor(0, 0xFFFFF, 0x93, 0xC),  # data: present, ring 0, read/write, G, B
    _descriptor(0, 0xFFFFF, 0x9B, 0xA),  # code64: present, ring 0, exec/read, G, L
))


def _flat(seg: Any, selector: int, type_: int, *, db: int, long: int = 0) -> None:
    seg.base, seg.limit, seg.selector = 0, 0xFFFFFFFF, selector
    seg.type, seg.present, seg.dpl, seg.s = type_, 1, 0, 1
    seg.db, seg.l, seg.g, seg.avl, seg.unusable = db, long, 1, 0, 0


def _write_gdt(vm: Vm, sregs: Any) -> None:
    vm.write(GDT_ADDRESS, GDT)
    sregs.gdt.base, sregs.gdt.limit = GDT_ADDRESS, len(GDT) - 1


def _write_trap_idt(vm: Vm, mode: Mode, sregs: Any) -> None:
    vm.write(TRAP_STUBS, TRAP_STUB * 256)
    if mode == "real":
        ivt = b"".join(struct.pack("<HH", TRAP_STUBS + 4 * v, 0) for v in range(256))
        vm.write(0, ivt)
        sregs.idt.base, sregs.idt.limit = 0, len(ivt) - 1
        return
    gates = []
    for v in range(256):
        target = TRAP_STUBS + 4 * v
        if mode == "long":  # 64-bit interrupt gate
            gates.append(struct.pack("<HHHHII", target & 0xFFFF, SEL_CODE64, 0x8E00,
                                     target >> 16, 0, 0))
        else:  # 32-bit interrupt gate
            gates.append(struct.pack("<HHHH", target & 0xFFFF, SEL_CODE32, 0x8E00,
                                     target >> 16))
    idt = b"".join(gates)
    vm.write(IDT_ADDRESS, idt)
    sregs.idt.base, sregs.idt.limit = IDT_ADDRESS, len(idt) - 1


@dataclass(frozen=True)
class TrappedException:
    """An exception that reached the VMM's trap IDT."""

    vector: int
    rip: int  # where it happened (the faulting instruction, for faults)
    error_code: int | None

    @property
    def name(self) -> str:
        n = EXCEPTION_NAMES[self.vector] if self.vector < len(EXCEPTION_NAMES) else "?"
        return f"#{n} (vector {self.vector})"


def trapped_exception(vm: Vm, vcpu: Vcpu) -> TrappedException | None:
    """If the VCPU is halted in a trap stub, the exception that brought it there."""
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    linear = sregs.cs.base + regs.rip - 1  # HLT has been executed: RIP is past it
    vector, offset = divmod(linear - TRAP_STUBS, len(TRAP_STUB))
    if not 0 <= vector < 256 or offset != 0:
        return None
    long_mode = bool(sregs.efer & EFER_LMA)
    width = 8 if long_mode else 4 if sregs.cr0 & CR0_PE else 2
    sp = regs.rsp & 0xFFFF if width == 2 else regs.rsp
    frame = vm.read(sregs.ss.base + sp, 2 * width)
    words = [int.from_bytes(frame[i:i + width], "little") for i in (0, width)]
    if width != 2 and vector in ERROR_CODE_VECTORS:
        return TrappedException(vector, words[1], words[0])
    return TrappedException(vector, words[0], None)


def identity_page_tables(base: int, size: int) -> bytes:
    """4-level page tables to put at `base` (PML4, PDPT, then one PD per GiB) that
    identity-map [0, size) with 2 MiB pages; CR3 = base."""
    gib = max(1, -(-size // (1 << 30)))
    if gib > 512:
        raise ValueError(f"identity map of {size:#x} bytes: one PDPT maps 512 GiB")
    present_rw, huge = 0x3, 0x80
    pdpt, pd0 = base + 0x1000, base + 0x2000
    pml4 = struct.pack("<Q", pdpt | present_rw).ljust(4096, b"\0")
    pdpt_page = b"".join(struct.pack("<Q", (pd0 + 0x1000 * i) | present_rw)
                         for i in range(gib)).ljust(4096, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | present_rw | huge) for i in range(512 * gib))
    return pml4 + pdpt_page + pds


def _write_page_tables(vm: Vm) -> int:
    vm.write(PML4_ADDRESS, identity_page_tables(PML4_ADDRESS, 1 << 30))
    return PML4_ADDRESS


def set_flat_mode(sregs: Any, *, long_mode: bool, code_selector: int, data_selector: int,
                  cr3: int = 0) -> None:
    """Protected mode with flat 4 GiB segments (paging off), or long mode (paging on with
    the tables at cr3): CS = code_selector, DS/ES/FS/GS/SS = data_selector. The GDT the
    selectors name is the caller's to load."""
    sregs.cr0 = CR0_PE | CR0_ET
    if long_mode:
        sregs.cr3 = cr3
        sregs.cr4 = CR4_PAE
        sregs.cr0 |= CR0_PG
        sregs.efer = EFER_LME | EFER_LMA
        _flat(sregs.cs, code_selector, 0xB, db=0, long=1)
    else:
        _flat(sregs.cs, code_selector, 0xB, db=1)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _flat(seg, data_selector, 0x3, db=1)


def setup_mode(vm: Vm, vcpu: Vcpu, mode: Mode, entry: int = LOAD_ADDRESS,
               stack: int = STACK_TOP) -> None:
    """Set registers (and GDT/page tables when needed) so the VCPU starts at entry in mode."""
    sregs = vcpu.get_sregs()
    regs = vcpu.get_regs()
    if mode == "real":
        if entry >= 0x100000:
            raise ValueError(f"real-mode entry {entry:#x} is above 1 MiB")
        # CS:IP with IP as small as possible, so code may use 16-bit near jumps freely
        cs = entry >> 4 if entry >= 0x10000 else 0
        for seg in (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            seg.selector, seg.base = 0, 0
        sregs.cs.selector, sregs.cs.base = cs, cs << 4
        regs.rip = entry - (cs << 4)
    else:
        _write_gdt(vm, sregs)
        if mode not in ("protected", "long"):
            raise ValueError(f"unknown mode {mode!r}")
        long_mode = mode == "long"
        set_flat_mode(sregs, long_mode=long_mode,
                      code_selector=SEL_CODE64 if long_mode else SEL_CODE32,
                      data_selector=SEL_DATA,
                      cr3=_write_page_tables(vm) if long_mode else 0)
        regs.rip = entry
    _write_trap_idt(vm, mode, sregs)
    regs.rsp = stack
    regs.rflags = RFLAGS_RESERVED
    vcpu.set_sregs(sregs)
    vcpu.set_regs(regs)
