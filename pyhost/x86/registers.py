"""A VCPU's state as text: the one register dump of pyhost (run-raw's table, boot's log
line), and the CPU mode the guest is in."""

from __future__ import annotations

from typing import Any

from ..vcpu import Vcpu
from .modes import CR0_PE, CR0_PG, EFER_LMA

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def cpu_mode(sregs: Any) -> str:
    """"real", "protected", "protected, paging" or "long" (from CR0, EFER and CS.L)."""
    if sregs.efer & EFER_LMA:
        return "long" if sregs.cs.l else "compatibility"
    if not sregs.cr0 & CR0_PE:
        return "real"
    return "protected, paging" if sregs.cr0 & CR0_PG else "protected"


def format_registers(vcpu: Vcpu, columns: int = 0) -> str:
    """The general registers, RIP, RFLAGS, control registers, EFER and CS: one line of
    name=0x... (columns=0, for a log line; starts with rip=), or a table of `columns`
    fixed-width registers a line (what run-raw prints)."""
    r, s = vcpu.get_regs(), vcpu.get_sregs()
    system = (f"cr0={s.cr0:#x} cr2={s.cr2:#x} cr3={s.cr3:#x} cr4={s.cr4:#x} "
              f"efer={s.efer:#x} cs={s.cs.selector:#x}(base {s.cs.base:#x}, "
              f"{cpu_mode(s)} mode)")
    if not columns:
        names = ("rip", "rflags", *GPRS)
        return " ".join(f"{n}={getattr(r, n):#x}" for n in names) + " " + system
    names = (*GPRS, "rip", "rflags")
    rows = ["  ".join(f"{n:>6}={getattr(r, n):016x}" for n in names[i:i + columns])
            for i in range(0, len(names), columns)]
    return "\n".join(f"  {row}" for row in [*rows, system])
