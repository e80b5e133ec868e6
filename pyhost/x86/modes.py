"""Put a fresh VCPU into real, 32-bit protected or 64-bit long mode.

Protected and long mode need structures in guest memory; they go in low
memory, below the default load address (LOAD_ADDRESS):
  GDT at 0x1000: 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code
  PML4 at 0x2000, PDPT at 0x3000, PD at 0x4000: the first 1 GiB identity-mapped
  with 2 MiB pages (addresses no slot backs become MMIO exits)
  IDT at 0x5000: all gates not present, until the guest loads its own.  Any
  exception then escalates (#NP, #DF) to a triple fault, so the VMM sees
  Shutdown with RIP at the faulting instruction.  Real mode keeps the IVT at 0.
"""

from __future__ import annotations

import struct
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
NULL_IDT_ADDRESS = 0x5000
LOW_STRUCTURES_END = 0x6000

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


def _write_page_tables(vm: Vm) -> int:
    pdpt, pd = PML4_ADDRESS + 0x1000, PML4_ADDRESS + 0x2000
    present_rw = 0x3
    vm.write(PML4_ADDRESS, struct.pack("<Q", pdpt | present_rw) + bytes(4088))
    vm.write(pdpt, struct.pack("<Q", pd | present_rw) + bytes(4088))
    huge = 0x80
    vm.write(pd, b"".join(struct.pack("<Q", (i << 21) | present_rw | huge) for i in range(512)))
    return PML4_ADDRESS


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
        sregs.idt.base, sregs.idt.limit = 0, 0x3FF
        regs.rip = entry - (cs << 4)
    else:
        _write_gdt(vm, sregs)
        gate_size = 16 if mode == "long" else 8
        vm.write(NULL_IDT_ADDRESS, bytes(256 * gate_size))
        sregs.idt.base, sregs.idt.limit = NULL_IDT_ADDRESS, 256 * gate_size - 1
        sregs.cr0 = CR0_PE | CR0_ET
        if mode == "protected":
            _flat(sregs.cs, SEL_CODE32, 0xB, db=1)
        elif mode == "long":
            sregs.cr3 = _write_page_tables(vm)
            sregs.cr4 = CR4_PAE
            sregs.cr0 |= CR0_PG
            sregs.efer = EFER_LME | EFER_LMA
            _flat(sregs.cs, SEL_CODE64, 0xB, db=0, long=1)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _flat(seg, SEL_DATA, 0x3, db=1)
        regs.rip = entry
    regs.rsp = stack
    regs.rflags = RFLAGS_RESERVED
    vcpu.set_sregs(sregs)
    vcpu.set_regs(regs)
