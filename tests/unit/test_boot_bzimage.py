"""pyhost.boot.bzimage: setup header, load plan and zero page, against the real bootfd kernel,
synthetic headers of several protocol versions, and malformed images."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhost.boot import BootError
from pyhost.boot.bzimage import (
    CAN_USE_HEAP,
    CMDLINE_ADDR,
    LOADED_HIGH,
    SETUP_HEADER,
    XLF_CAN_BE_LOADED_ABOVE_4G,
    XLF_KERNEL_64,
    ZERO_PAGE_ADDR,
    BzImage,
    build_boot_params,
    default_e820,
    plan_load,
)
from pyhost.boot.fat import FatImage

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture(scope="module")
def bootfd_kernel() -> BzImage:
    fs = FatImage((ROOT / "bintest" / "bootfd.img").read_bytes())
    return BzImage(fs.read_file("/vmlinuz"))


def test_bootfd_kernel_header_known_values(bootfd_kernel: BzImage) -> None:
    """The committed kernel: i386 tinyconfig, not relocatable, protocol 2.15."""
    h = bootfd_kernel.header
    raw = bootfd_kernel.data
    assert h.version == 0x020F == struct.unpack_from("<H", raw, 0x206)[0]
    assert h.version_str == "2.15"
    assert h.boot_flag == 0xAA55
    assert h.setup_sects == raw[0x1F1]
    assert bootfd_kernel.setup_size == (h.setup_sects + 1) * 512
    assert len(bootfd_kernel.protected_mode) == len(raw) - bootfd_kernel.setup_size
    assert h.syssize * 16 == len(bootfd_kernel.protected_mode)
    assert h.loadflags & LOADED_HIGH
    assert h.code32_start == 0x100000
    assert h.initrd_addr_max == 0x7FFFFFFF
    assert h.relocatable_kernel is False
    assert h.kernel_alignment == 0x200000
    assert h.xloadflags == 0 and not h.kernel_64  # a 32-bit kernel
    assert h.cmdline_size == 2047
    assert h.pref_address == 0x1000000  # CONFIG_PHYSICAL_START
    assert h.init_size == struct.unpack_from("<I", raw, 0x260)[0]
    assert 2 * MiB < h.init_size < 8 * MiB
    assert len(h.raw) == 0x26C - 0x1F1
    assert bootfd_kernel.kernel_version is not None
    assert bootfd_kernel.kernel_version.startswith("6.1.")
    assert "(kvmport@kvmport) #1" in bootfd_kernel.kernel_version


def test_bootfd_kernel_plan(bootfd_kernel: BzImage) -> None:
    plan = plan_load(bootfd_kernel, 64 * MiB, "console=ttyS0", initrd_size=2562)
    assert plan.kernel_addr == 0x100000 == plan.entry
    assert not plan.entry_64
    assert plan.runtime_start == 0x1000000
    assert plan.runtime_end == 0x1000000 + bootfd_kernel.header.init_size
    assert plan.initrd_addr == (64 * MiB - 2562) & ~0xFFF
    assert plan.initrd_addr % 4096 == 0 and plan.initrd_addr + 2562 <= 64 * MiB
    assert plan.cmdline == b"console=ttyS0\0"
    assert (plan.zero_page_addr, plan.cmdline_addr) == (ZERO_PAGE_ADDR, CMDLINE_ADDR)
    with pytest.raises(BootError, match="too little memory: the kernel needs RAM up to"):
        plan_load(bootfd_kernel, 16 * MiB)
    with pytest.raises(BootError, match="too little memory for kernel\\+initrd"):
        plan_load(bootfd_kernel, 24 * MiB, initrd_size=8 * MiB)


def test_bootfd_zero_page(bootfd_kernel: BzImage) -> None:
    plan = plan_load(bootfd_kernel, 128 * MiB, b"console=ttyS0 quiet", initrd_size=5000)
    bp = build_boot_params(bootfd_kernel, plan)
    assert len(bp) == 4096
    assert bp[0x202:0x206] == b"HdrS"
    assert bp[0x1F1] == bootfd_kernel.header.setup_sects
    assert struct.unpack_from("<H", bp, 0x1FA)[0] == 0xFFFF  # vid_mode
    assert bp[0x210] == 0xFF  # type_of_loader
    assert bp[0x211] & (CAN_USE_HEAP | LOADED_HIGH) == CAN_USE_HEAP | LOADED_HIGH
    assert not bp[0x211] & 0x20  # not QUIET
    assert struct.unpack_from("<I", bp, 0x214)[0] == 0x100000  # code32_start
    assert struct.unpack_from("<II", bp, 0x218) == (plan.initrd_addr, 5000)
    assert struct.unpack_from("<H", bp, 0x224)[0] == 0xDE00  # heap_end_ptr
    assert struct.unpack_from("<I", bp, 0x228)[0] == CMDLINE_ADDR
    assert struct.unpack_from("<I", bp, 0x1E0)[0] == 127 * 1024  # alt_mem_k
    assert bp[0x1E8] == 3
    table = [struct.unpack_from("<QQI", bp, 0x2D0 + 20 * i) for i in range(3)]
    assert table == [
        (0, 0x9F000, 1),
        (0x9F000, 0x100000 - 0x9F000, 2),
        (0x100000, 127 * MiB, 1),
    ]
    assert bp[0x1EF] == 0  # sentinel
    assert bp[:0x40] == bytes(0x40)  # screen_info: no text screen, no VGA writes
    # Fields past the header and outside the ones we set stay zero.
    assert bp[0x2D0 + 60 :] == bytes(4096 - 0x2D0 - 60)
    assert bp[0x26C:0x2D0] == bytes(0x2D0 - 0x26C)
    quiet = build_boot_params(bootfd_kernel, plan, quiet=True)
    assert quiet[0x211] & 0x20


# ---- synthetic kernels ----


def make_bzimage(
    version: int = 0x020F,
    *,
    setup_sects: int = 4,
    pm_size: int = 64 * 1024,
    loadflags: int = LOADED_HIGH,
    xloadflags: int = 0,
    relocatable: int = 1,
    kernel_alignment: int = 0x200000,
    pref_address: int = 0x1000000,
    init_size: int = 0x400000,
    initrd_addr_max: int = 0x7FFFFFFF,
    cmdline_size: int = 2047,
    magic: bytes = b"HdrS",
) -> bytes:
    fields = {f.name: 0 for f in SETUP_HEADER.subcons}
    fields.update(
        setup_sects=setup_sects, syssize=pm_size // 16, boot_flag=0xAA55, jump=0x6AEB,
        version=version, loadflags=loadflags, code32_start=0x100000,
        initrd_addr_max=initrd_addr_max, kernel_alignment=kernel_alignment,
        relocatable_kernel=relocatable, xloadflags=xloadflags, cmdline_size=cmdline_size,
        pref_address=pref_address, init_size=init_size,
    )  # fmt: skip
    hdr = bytearray(SETUP_HEADER.build(fields))
    hdr[0x202 - 0x1F1 : 0x206 - 0x1F1] = magic
    setup = bytearray((setup_sects or 4) * 512 + 512)
    setup[0x1F1 : 0x1F1 + len(hdr)] = hdr
    return bytes(setup) + b"\x90" * pm_size


def test_64bit_relocatable_kernel() -> None:
    k = BzImage(make_bzimage(xloadflags=XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G))
    assert k.header.kernel_64 and k.header.relocatable_kernel
    plan = plan_load(k, 256 * MiB, "x", initrd_size=3 * MiB)
    assert plan.kernel_addr == 0x1000000 == plan.runtime_start
    assert plan.entry == 0x1000200 and plan.entry_64
    assert plan.initrd_addr == 253 * MiB
    plan32 = plan_load(k, 256 * MiB, prefer_64=False)
    assert (plan32.entry, plan32.entry_64) == (0x1000000, False)
    assert plan32.initrd_addr == 0 and plan32.initrd_size == 0


def test_relocatable_alignment_and_low_pref() -> None:
    k = BzImage(make_bzimage(pref_address=0x1100000, kernel_alignment=0x1000000))
    assert plan_load(k, 256 * MiB).kernel_addr == 0x2000000
    k = BzImage(make_bzimage(pref_address=0))  # no preference: 1 MiB
    assert plan_load(k, 64 * MiB).kernel_addr == 0x200000  # 1 MiB aligned up


def test_initrd_addr_max_caps_the_initrd() -> None:
    k = BzImage(make_bzimage(initrd_addr_max=0x37FFFFFF))
    plan = plan_load(k, 2048 * MiB, initrd_size=10 * MiB + 1)
    assert plan.initrd_addr + plan.initrd_size <= 0x38000000
    assert plan.initrd_addr == (0x38000000 - (10 * MiB + 1)) & ~0xFFF
    # Without XLF_CAN_BE_LOADED_ABOVE_4G the initrd stays below 4 GiB.
    k = BzImage(make_bzimage(initrd_addr_max=0xFFFFFFFF))
    plan = plan_load(k, 8192 * MiB, initrd_size=MiB)
    assert plan.initrd_addr == (1 << 32) - MiB


def test_high_initrd_uses_ext_fields() -> None:
    k = BzImage(
        make_bzimage(
            xloadflags=XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, initrd_addr_max=0xFFFFFFFF
        )
    )
    plan = plan_load(k, 8192 * MiB, initrd_size=MiB)
    assert plan.initrd_addr == 0xFFFFFFFF + 1 - MiB  # still capped by initrd_addr_max
    bp = build_boot_params(k, plan)
    assert struct.unpack_from("<I", bp, 0xC0)[0] == plan.initrd_addr >> 32


def test_protocol_2_02_defaults() -> None:
    k = BzImage(make_bzimage(0x0202, setup_sects=0, cmdline_size=9999, init_size=1))
    h = k.header
    assert h.setup_sects == 4  # 0 means 4
    assert h.cmdline_size == 255 and h.initrd_addr_max == 0x37FFFFFF
    assert h.pref_address == 0x100000 and h.init_size == 0 and not h.relocatable_kernel
    plan = plan_load(k, 32 * MiB, "a" * 255)
    assert plan.kernel_addr == 0x100000
    assert plan.runtime_end == 0x100000 + 4 * len(k.protected_mode)  # estimated
    with pytest.raises(BootError, match="exceeds the kernel's cmdline_size 255"):
        plan_load(k, 32 * MiB, "a" * 256)
    bp = build_boot_params(k, plan)
    # A 2.02 header ends at 0x26c as built here; fields beyond its protocol are left as
    # the image had them, and the boot_params is still 4096 bytes.
    assert len(bp) == 4096


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"version": 0x0201}, "protocol 2.01 too old"),
        ({"version": 0x0100}, "too old"),
        ({"magic": b"XXXX"}, "no 'HdrS' magic"),
        ({"loadflags": 0}, "zImage"),
        ({"relocatable": 1, "kernel_alignment": 0x3000}, "kernel_alignment"),
        ({"pm_size": 0}, "truncated bzImage"),
    ],
)
def test_bad_images(kwargs: dict[str, int | bytes], match: str) -> None:
    with pytest.raises(BootError, match=match):
        BzImage(make_bzimage(**kwargs))  # type: ignore[arg-type]


def test_tiny_and_garbage_inputs() -> None:
    for data in (b"", b"MZ", bytes(0x1F0), bytes(4096), b"\x7fELF" + bytes(8192)):
        with pytest.raises(BootError, match="not a bzImage"):
            BzImage(data)


def test_plan_errors() -> None:
    k = BzImage(make_bzimage())
    with pytest.raises(BootError, match="NUL byte"):
        plan_load(k, 64 * MiB, b"a\0b")
    with pytest.raises(BootError, match="at least 2 MiB"):
        plan_load(k, MiB)
    with pytest.raises(BootError, match="128"):
        build_boot_params(k, plan_load(k, 64 * MiB), [(0, 4096, 1)] * 129)
    with pytest.raises(BootError, match="bad e820 entry 0"):
        build_boot_params(k, plan_load(k, 64 * MiB), [(-1, 4096, 1)])
    with pytest.raises(BootError, match="too little memory for an e820"):
        default_e820(MiB)


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.lists(st.tuples(st.integers(0x1F0, 0x270), st.integers(0, 255)), max_size=30),
    st.integers(0, 4096 * MiB),
    st.integers(0, 64 * MiB),
    st.integers(0, 5000),
)
def test_fuzz_header_raises_only_booterror(
    flips: list[tuple[int, int]], mem: int, initrd: int, cut: int
) -> None:
    data = bytearray(make_bzimage(pm_size=4096))
    for off, val in flips:
        data[off] = val
    try:
        k = BzImage(bytes(data[: len(data) - cut]))
        plan = plan_load(k, mem, b"console=ttyS0", initrd)
        assert len(build_boot_params(k, plan)) == 4096
    except BootError:
        pass


def test_boot_gdt_and_entry_registers(bootfd_kernel: BzImage) -> None:
    from pyhost.boot.bzimage import BOOT_CS, BOOT_DS, boot_gdt, entry_registers

    gdt = boot_gdt()
    assert len(gdt) == 32 and gdt[:16] == bytes(16)
    code, data = (
        struct.unpack_from("<QQ", gdt, BOOT_CS)[0],
        struct.unpack_from("<Q", gdt, BOOT_DS)[0],
    )
    assert (code >> 40) & 0xFF == 0x9A and (data >> 40) & 0xFF == 0x92  # present, ring 0
    assert (code >> 52) & 0xF == 0xC  # G=1, D=1 (32-bit)
    assert (struct.unpack_from("<Q", boot_gdt(True), BOOT_CS)[0] >> 52) & 0xF == 0xA  # G, L
    regs = entry_registers(plan_load(bootfd_kernel, 64 * MiB))
    assert regs["rip"] == 0x100000 and regs["rsi"] == ZERO_PAGE_ADDR and regs["rflags"] == 2
