"""The Linux loader (pyhost.boot.linux): what it puts in guest memory and registers for the
committed bootfd kernel, computed without a VM and applied to a VCPU that never runs
(the host's /dev/kvm is far too slow to boot it; the lab test does that)."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from pyhost.boot import BootError
from pyhost.boot.bzimage import BOOT_CS, BOOT_DS, E820_RAM, E820_RESERVED, BzImage, boot_gdt
from pyhost.boot.fat import FatImage
from pyhost.boot.linux import (
    BOOT_GDT_ADDR,
    PAGE_TABLES_ADDR,
    BootSpec,
    apply_layout,
    layout_linux,
)
from pyhost.cpuid import CpuidEntry
from pyhost.machine import CPUID_APIC, Machine, guest_cpuid

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
CMDLINE = "console=ttyS0 reboot=t io_delay=none quiet panic=-1"


@pytest.fixture(scope="module")
def bootfd() -> tuple[bytes, bytes]:
    fs = FatImage((ROOT / "bintest" / "bootfd.img").read_bytes())
    return fs.read_file("/vmlinuz"), fs.read_file("/initrd.gz")


def kernel_64(kernel: bytes) -> bytes:
    """The bootfd kernel's header claiming a 64-bit entry (XLF_KERNEL_64): enough to
    exercise the long-mode entry state without running it."""
    k = bytearray(kernel)
    k[0x236] |= 0x01
    return bytes(k)


def u32(page: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", page, off)[0])


def find(writes: list[tuple[int, bytes]], addr: int) -> bytes:
    return next(data for a, data in writes if a == addr)


def test_layout_of_the_bootfd_kernel(bootfd):
    kernel, initrd = bootfd
    lay = layout_linux(kernel, initrd, CMDLINE, 64 * MiB)
    plan = lay.plan
    assert not lay.long_mode and lay.cr3 == 0
    assert plan.kernel_addr == 0x100000 and plan.entry == 0x100000
    assert find(lay.writes, 0x100000) == kernel[(kernel[0x1F1] + 1) * 512:]
    assert find(lay.writes, plan.cmdline_addr) == CMDLINE.encode() + b"\0"
    assert find(lay.writes, plan.initrd_addr) == initrd
    assert plan.initrd_addr % 4096 == 0 and plan.initrd_addr + len(initrd) <= 64 * MiB
    assert plan.initrd_addr >= plan.runtime_end  # clear of the decompressed kernel
    zp = find(lay.writes, plan.zero_page_addr)
    assert len(zp) == 4096 and zp[0x202:0x206] == b"HdrS"
    assert u32(zp, 0x228) == plan.cmdline_addr  # cmd_line_ptr
    assert u32(zp, 0x218) == plan.initrd_addr and u32(zp, 0x21C) == len(initrd)
    assert u32(zp, 0x214) == 0x100000  # code32_start
    assert zp[0x210] == 0xFF  # type_of_loader
    assert zp[0x211] & 0x80  # CAN_USE_HEAP
    assert zp[0x1E8] == 3  # e820 entries
    e820 = [struct.unpack_from("<QQI", zp, 0x2D0 + 20 * i) for i in range(3)]
    assert e820 == [(0, 0x9F000, E820_RAM), (0x9F000, 0x61000, E820_RESERVED),
                    (0x100000, 63 * MiB, E820_RAM)]
    assert find(lay.writes, BOOT_GDT_ADDR) == boot_gdt(False)
    assert lay.regs == {"rip": 0x100000, "rsi": plan.zero_page_addr, "rbp": 0, "rdi": 0,
                        "rbx": 0, "rflags": 2}
    # nothing overlaps anything else
    spans = sorted((a, a + len(d)) for a, d in lay.writes)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))


def test_layout_64_bit_entry_maps_all_ram(bootfd):
    kernel, _ = bootfd
    lay = layout_linux(kernel_64(kernel), b"", "", 3 << 30)
    assert lay.long_mode and lay.plan.entry == 0x100200 and lay.cr3 == PAGE_TABLES_ADDR
    assert find(lay.writes, BOOT_GDT_ADDR) == boot_gdt(True)
    tables = find(lay.writes, PAGE_TABLES_ADDR)
    pml4, pdpt = struct.unpack_from("<Q", tables, 0)[0], tables[0x1000:0x2000]
    assert pml4 == (PAGE_TABLES_ADDR + 0x1000) | 3
    assert [struct.unpack_from("<Q", pdpt, 8 * i)[0] for i in range(4)] == \
        [(PAGE_TABLES_ADDR + 0x2000 + 0x1000 * i) | 3 for i in range(3)] + [0]
    last = struct.unpack_from("<Q", tables, 0x2000 + 8 * (3 * 512 - 1))[0]
    assert last == ((3 << 30) - (2 << 20)) | 0x83


@pytest.mark.parametrize("mem, message", [
    (16 * MiB, "too little memory"),
    (MiB, "too little memory"),
    (64 * MiB + 1, "whole number of pages"),
])
def test_layout_rejects_bad_memory_sizes(bootfd, mem, message):
    with pytest.raises(BootError, match=message):
        layout_linux(bootfd[0], bootfd[1], "", mem)


def test_layout_rejects_non_kernels(bootfd):
    with pytest.raises(BootError, match="HdrS"):
        layout_linux(b"\0" * 4096, b"", "", 64 * MiB)
    old = bytearray(bootfd[0])
    old[0x206:0x208] = struct.pack("<H", 0x0201)
    with pytest.raises(BootError, match="too old"):
        layout_linux(bytes(old), b"", "", 64 * MiB)


def test_guest_cpuid_hides_the_local_apic():
    entries = [CpuidEntry(0, eax=0xD), CpuidEntry(1, edx=0xFFFFFFFF, ecx=0xFFFFFFFF)]
    leaf1 = guest_cpuid(entries)[1]
    assert not leaf1.edx & CPUID_APIC and not leaf1.ecx & (1 << 21)
    assert leaf1.edx | CPUID_APIC == 0xFFFFFFFF and guest_cpuid(entries)[0] == entries[0]


def test_apply_32_bit_entry_state(kvm, bootfd):
    kernel, initrd = bootfd
    spec = BootSpec(kernel, initrd, CMDLINE)
    with Machine(kvm, spec, 64 * MiB, output=lambda b: None) as m:
        plan = m.layout.plan
        s, r = m.vcpu.get_sregs(), m.vcpu.get_regs()
        assert s.cs.selector == BOOT_CS and s.cs.db == 1 and s.cs.l == 0
        assert s.cs.base == 0 and s.cs.limit == 0xFFFFFFFF and s.cs.g == 1
        for seg in (s.ds, s.es, s.ss):
            assert seg.selector == BOOT_DS and seg.base == 0 and seg.limit == 0xFFFFFFFF
        assert s.cr0 & 1 and not s.cr0 & (1 << 31) and not s.efer & (1 << 10)
        assert s.gdt.base == BOOT_GDT_ADDR and s.gdt.limit == 31
        assert r.rip == 0x100000 and r.rsi == plan.zero_page_addr and r.rflags == 2
        assert m.vm.read(BOOT_GDT_ADDR + 0x10, 16) == boot_gdt(False)[0x10:]
        zp = m.vm.read(plan.zero_page_addr, 4096)
        assert u32(zp, 0x228) == plan.cmdline_addr and u32(zp, 0x218) == plan.initrd_addr
        assert m.vm.read(plan.cmdline_addr, len(CMDLINE)) == CMDLINE.encode()
        assert m.vm.read(plan.initrd_addr, len(initrd)) == initrd
        assert m.vm.read(0x100000, 512) == kernel[(kernel[0x1F1] + 1) * 512:][:512]


def test_apply_64_bit_entry_state(kvm, bootfd):
    lay = layout_linux(kernel_64(bootfd[0]), b"", "", 64 * MiB)
    vm = kvm.create_vm()
    try:
        vm.add_memory(0, 64 * MiB)
        vcpu = vm.create_vcpu()
        vcpu.set_cpuid2(kvm.get_supported_cpuid())
        apply_layout(vm, vcpu, lay)
        s, r = vcpu.get_sregs(), vcpu.get_regs()
        assert s.efer & (1 << 10) and s.cr0 & (1 << 31) and s.cr4 & (1 << 5)
        assert s.cr3 == PAGE_TABLES_ADDR and s.cs.selector == BOOT_CS and s.cs.l == 1
        assert s.ds.selector == BOOT_DS
        assert r.rip == 0x100200 and r.rsi == lay.plan.zero_page_addr and r.rflags == 2
    finally:
        vm.close()


class FakeTscVcpu:
    """get_msrs answers IA32_TSC from the host clock at `khz`."""

    def __init__(self, khz: int) -> None:
        self.khz = khz

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        import time

        return {0x10: time.monotonic_ns() * self.khz // 1_000_000}


def test_tsc_measurement_and_plausibility():
    from pyhost.tsc import TscMeasurement, measure_tsc_khz, tsc_usable

    m = measure_tsc_khz(FakeTscVcpu(2_500_000), duration=0.05)  # type: ignore[arg-type]
    assert m is not None and abs(m.khz - 2_500_000) <= 2_500_000 * max(m.error_ppm, 50) / 1e6
    assert tsc_usable(TscMeasurement(2_500_000, 20)) is None
    assert "imprecise" in (tsc_usable(TscMeasurement(2_500_000, 800)) or "")
    assert "implausible" in (tsc_usable(TscMeasurement(19, 20)) or "")
    assert tsc_usable(None) == "not readable"


def test_machine_passes_tsc_khz_when_the_command_line_has_room(kvm, bootfd):
    kernel, initrd = bootfd
    with Machine(kvm, BootSpec(kernel, initrd, CMDLINE), 64 * MiB, tsc_khz=2_500_000,
                 output=lambda b: None) as m:
        want = f"{CMDLINE} tsc_early_khz=2500000".encode() + b"\0"
        assert m.tsc_khz == 2_500_000 and m.cmdline.endswith("tsc_early_khz=2500000")
        assert m.vm.read(m.layout.plan.cmdline_addr, len(want)) == want
    full = "x" * BzImage(kernel).header.cmdline_size  # no room for one more argument
    with Machine(kvm, BootSpec(kernel, initrd, full), 64 * MiB, tsc_khz=2_500_000,
                 output=lambda b: None) as m:
        assert m.tsc_khz is None and m.cmdline == full
        assert m.vm.read(m.layout.plan.cmdline_addr, len(full) + 1) == full.encode() + b"\0"
