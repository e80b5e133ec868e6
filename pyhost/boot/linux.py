"""Linux on a PC: from a boot disk image (or a kernel, initrd and command line) to what the
loader puts in guest memory and registers (boot protocol 2.02+, 32- or 64-bit entry).

    spec = boot_spec_from_image(Path("bintest/bootfd.img"))     # or BootSpec(kernel=...)
    layout = layout_linux(spec.kernel, spec.initrd, spec.cmdline, 64 << 20)  # no VM needed
    apply_layout(vm, vcpu, layout)

Guest-physical layout (below 1 MiB, the kernel from 1 MiB up, the initrd at the top):
  0x1000  the boot GDT (flat code at 0x10, flat data at 0x18)
  0x7000  the zero page (boot_params);  0x20000  the command line
  0x30000 identity page tables for a 64-bit entry (PML4, PDPT, one PD per GiB)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PyhostError
from ..vcpu import Vcpu
from ..vm import PAGE_SIZE, Vm
from ..x86.modes import identity_page_tables, set_flat_mode
from . import BootError
from .bootcfg import find_boot_entry
from .bzimage import (
    BOOT_CS,
    BOOT_DS,
    BzImage,
    LoadPlan,
    boot_gdt,
    build_boot_params,
    entry_registers,
    plan_load,
)
from .fat import FatImage

BOOT_GDT_ADDR = 0x1000
PAGE_TABLES_ADDR = 0x30000
PAGE_TABLES_END = 0x7F000  # below the EBDA; room for 77 PDs (77 GiB)


@dataclass
class BootSpec:
    """What to boot: the kernel image, an initrd, the command line, and where they came from."""

    kernel: bytes
    initrd: bytes = b""
    cmdline: str = ""
    source: str = ""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PyhostError(f"cannot read {what} {path}: {e.strerror}") from None


def boot_spec_from_image(image: Path, label: str | None = None) -> BootSpec:
    """The default (or `label`) entry of the boot config on a FAT disk image."""
    fs = FatImage.from_disk(_read(image, "image"))
    entry = find_boot_entry(fs, label)
    initrd = b"".join(fs.read_file(p) for p in entry.initrds)
    return BootSpec(fs.read_file(entry.kernel), initrd, entry.cmdline,
                    f"{image.name}: {entry.config} label {entry.label!r} ({entry.kernel})")


def boot_spec(image: Path | None, kernel: Path | None = None, initrd: Path | None = None,
              append: str | None = None, label: str | None = None) -> BootSpec:
    """From the command line's pieces: an image's boot entry, overridden by --kernel,
    --initrd; --append adds to the command line."""
    if image is None and kernel is None:
        raise PyhostError("nothing to boot: give an IMAGE or --kernel")
    spec = boot_spec_from_image(image, label) if image is not None and kernel is None \
        else BootSpec(b"", source="")
    if kernel is not None:
        spec.kernel = _read(kernel, "kernel")
        spec.source = str(kernel)
        spec.cmdline = ""
        spec.initrd = b""
    if initrd is not None:
        spec.initrd = _read(initrd, "initrd")
    if append:
        spec.cmdline = f"{spec.cmdline} {append}".strip()
    return spec


@dataclass
class BootLayout:
    """Everything the loader puts in guest memory and registers, computed without a VM."""

    kernel: BzImage
    plan: LoadPlan
    writes: list[tuple[int, bytes]]  # (guest-physical address, bytes)
    long_mode: bool
    gdt: bytes
    cr3: int
    regs: dict[str, int]


def layout_linux(kernel_bytes: bytes, initrd: bytes, cmdline: str, mem_size: int) -> BootLayout:
    """Plan a Linux boot (boot protocol 2.02+): the kernel at its load address, the initrd
    as high as the kernel allows, the command line, the zero page with an e820 map, the
    boot GDT and, for a 64-bit entry, identity page tables covering RAM."""
    if mem_size % PAGE_SIZE:
        raise BootError(f"memory size {mem_size:#x} is not a whole number of pages")
    kernel = BzImage(kernel_bytes)
    plan = plan_load(kernel, mem_size, cmdline, len(initrd))
    zero_page = build_boot_params(kernel, plan)
    long_mode = plan.entry_64
    gdt = boot_gdt(long_mode)
    writes = [(plan.kernel_addr, kernel.protected_mode), (plan.cmdline_addr, plan.cmdline),
              (plan.zero_page_addr, zero_page), (BOOT_GDT_ADDR, gdt)]
    if initrd:
        writes.append((plan.initrd_addr, initrd))
    cr3 = 0
    if long_mode:
        tables = identity_page_tables(PAGE_TABLES_ADDR, mem_size)
        if PAGE_TABLES_ADDR + len(tables) > PAGE_TABLES_END:
            most = (PAGE_TABLES_END - PAGE_TABLES_ADDR) // PAGE_SIZE - 2
            raise BootError(f"too much memory for a 64-bit entry: {mem_size >> 30} GiB "
                            f"(the identity map holds {most} GiB)")
        writes.append((PAGE_TABLES_ADDR, tables))
        cr3 = PAGE_TABLES_ADDR
    return BootLayout(kernel, plan, writes, long_mode, gdt, cr3, entry_registers(plan))


def apply_layout(vm: Vm, vcpu: Vcpu, layout: BootLayout) -> None:
    """Write the layout into guest memory and load the entry state into the VCPU:
    flat segments (CS=0x10, DS=ES=SS=0x18) from the boot GDT, paging off (32-bit entry) or
    on with the identity map (64-bit), interrupts off, ESI/RSI = the zero page."""
    for addr, data in layout.writes:
        vm.write(addr, data)
    sregs = vcpu.get_sregs()
    set_flat_mode(sregs, long_mode=layout.long_mode, code_selector=BOOT_CS,
                  data_selector=BOOT_DS, cr3=layout.cr3)
    sregs.gdt.base, sregs.gdt.limit = BOOT_GDT_ADDR, len(layout.gdt) - 1
    sregs.idt.base, sregs.idt.limit = 0, 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for name, value in layout.regs.items():
        setattr(regs, name, value)
    vcpu.set_regs(regs)
