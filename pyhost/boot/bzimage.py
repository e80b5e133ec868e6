"""Linux x86 bzImage: setup header parsing, load planning and the boot_params zero page.

    kernel = BzImage(Path("vmlinuz").read_bytes())
    plan = plan_load(kernel, mem_size=64 << 20, cmdline=b"console=ttyS0", initrd_size=len(rd))
    zero_page = build_boot_params(kernel, plan)
    # copy kernel.protected_mode to plan.kernel_addr, the initrd to plan.initrd_addr,
    # the command line (NUL-terminated) to plan.cmdline_addr, zero_page to plan.zero_page_addr;
    # enter at plan.entry (32-bit protected mode, flat segments, paging off, ESI = zero page,
    # or 64-bit long mode with identity paging, RSI = zero page, when plan.entry_64).

Follows Documentation/arch/x86/boot.rst (boot protocol 2.02 and later) and zero-page.rst.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import construct as cs

from pyhost.boot import BootError

SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = 0x53726448  # "HdrS"
BOOT_FLAG = 0xAA55
MIN_PROTOCOL = 0x0202
ZERO_PAGE_SIZE = 4096

# loadflags
LOADED_HIGH = 0x01
KASLR_FLAG = 0x02
QUIET_FLAG = 0x20
KEEP_SEGMENTS = 0x40
CAN_USE_HEAP = 0x80

# xloadflags
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
XLF_EFI_HANDOVER_32 = 0x04
XLF_EFI_HANDOVER_64 = 0x08
XLF_EFI_KEXEC = 0x10
XLF_5LEVEL = 0x20
XLF_5LEVEL_ENABLED = 0x40

# e820 types
E820_RAM = 1
E820_RESERVED = 2
E820_MAX_ENTRIES_ZEROPAGE = 128

# The guest-physical layout used by plan_load (below 1 MiB, away from the BIOS areas).
ZERO_PAGE_ADDR = 0x7000
CMDLINE_ADDR = 0x20000
LOW_RAM_END = 0x9F000  # usable conventional memory ends here (EBDA, VGA, BIOS above)
HIGH_RAM_START = 0x100000
DEFAULT_KERNEL_ADDR = 0x100000
OLD_INITRD_ADDR_MAX = 0x37FFFFFF  # protocol < 2.03
OLD_CMDLINE_SIZE = 255  # protocol < 2.06: 255 characters plus the NUL
PAGE = 0x1000

SETUP_HEADER = cs.Struct(
    "setup_sects" / cs.Int8ul,  # 0x1f1
    "root_flags" / cs.Int16ul,  # 0x1f2
    "syssize" / cs.Int32ul,  # 0x1f4
    "ram_size" / cs.Int16ul,  # 0x1f8
    "vid_mode" / cs.Int16ul,  # 0x1fa
    "root_dev" / cs.Int16ul,  # 0x1fc
    "boot_flag" / cs.Int16ul,  # 0x1fe
    "jump" / cs.Int16ul,  # 0x200
    "header" / cs.Int32ul,  # 0x202
    "version" / cs.Int16ul,  # 0x206
    "realmode_swtch" / cs.Int32ul,  # 0x208
    "start_sys_seg" / cs.Int16ul,  # 0x20c
    "kernel_version" / cs.Int16ul,  # 0x20e
    "type_of_loader" / cs.Int8ul,  # 0x210
    "loadflags" / cs.Int8ul,  # 0x211
    "setup_move_size" / cs.Int16ul,  # 0x212
    "code32_start" / cs.Int32ul,  # 0x214
    "ramdisk_image" / cs.Int32ul,  # 0x218
    "ramdisk_size" / cs.Int32ul,  # 0x21c
    "bootsect_kludge" / cs.Int32ul,  # 0x220
    "heap_end_ptr" / cs.Int16ul,  # 0x224
    "ext_loader_ver" / cs.Int8ul,  # 0x226
    "ext_loader_type" / cs.Int8ul,  # 0x227
    "cmd_line_ptr" / cs.Int32ul,  # 0x228
    "initrd_addr_max" / cs.Int32ul,  # 0x22c
    "kernel_alignment" / cs.Int32ul,  # 0x230
    "relocatable_kernel" / cs.Int8ul,  # 0x234
    "min_alignment" / cs.Int8ul,  # 0x235
    "xloadflags" / cs.Int16ul,  # 0x236
    "cmdline_size" / cs.Int32ul,  # 0x238
    "hardware_subarch" / cs.Int32ul,  # 0x23c
    "hardware_subarch_data" / cs.Int64ul,  # 0x240
    "payload_offset" / cs.Int32ul,  # 0x248
    "payload_length" / cs.Int32ul,  # 0x24c
    "setup_data" / cs.Int64ul,  # 0x250
    "pref_address" / cs.Int64ul,  # 0x258
    "init_size" / cs.Int32ul,  # 0x260
    "handover_offset" / cs.Int32ul,  # 0x264
    "kernel_info_offset" / cs.Int32ul,  # 0x268
)
SETUP_HEADER_SIZE = SETUP_HEADER.sizeof()  # 0x7b: up to 0x26c

E820_ENTRY = cs.Struct("addr" / cs.Int64ul, "size" / cs.Int64ul, "type" / cs.Int32ul)

# boot_params offsets (Documentation/arch/x86/zero-page.rst)
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_ALT_MEM_K = 0x1E0
BP_E820_ENTRIES = 0x1E8
BP_SENTINEL = 0x1EF
BP_E820_TABLE = 0x2D0


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the setup header, with protocol-version defaults filled in."""

    setup_sects: int
    syssize: int
    boot_flag: int
    version: int
    kernel_version_ptr: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable_kernel: bool
    min_alignment: int
    xloadflags: int
    cmdline_size: int
    payload_offset: int
    payload_length: int
    pref_address: int
    init_size: int
    handover_offset: int
    raw: bytes = field(repr=False)  # the header bytes as in the file, 0x1f1 up to its end

    @property
    def version_str(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    @property
    def kernel_64(self) -> bool:
        return bool(self.xloadflags & XLF_KERNEL_64)


class BzImage:
    """A bzImage in memory: its setup header, real-mode setup and protected-mode kernel."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        end = SETUP_HEADER_OFFSET + SETUP_HEADER_SIZE
        if len(self.data) < 0x202 + 4:
            raise BootError(f"not a bzImage: only {len(self.data)} bytes")
        padded = self.data[:end].ljust(end, b"\0")
        h = SETUP_HEADER.parse(padded[SETUP_HEADER_OFFSET:])
        if h.header != HDRS_MAGIC:
            raise BootError(
                f"not a bzImage: no 'HdrS' magic at 0x202 (found {h.header:#010x}); "
                "a raw vmlinux or a pre-2.00 zImage?"
            )
        v = h.version
        if v < MIN_PROTOCOL:
            raise BootError(
                f"boot protocol {v >> 8}.{v & 0xFF:02d} too old: need 2.02 or later (Linux 2.4+)"
            )
        if not h.loadflags & LOADED_HIGH:
            raise BootError("not a bzImage: a zImage (LOADED_HIGH clear) loads at 0x10000")
        # The header's length is given by the jump at 0x200: 0x202 + its 8-bit offset.
        hdr_end = 0x202 + self.data[0x201]
        if hdr_end < 0x202 + 4 or hdr_end > len(self.data):
            raise BootError(f"bad setup header: its length byte at 0x201 gives end {hdr_end:#x}")
        setup_sects = h.setup_sects or 4
        self.setup_size = (setup_sects + 1) * 512
        if self.setup_size >= len(self.data):
            raise BootError(
                f"truncated bzImage: {len(self.data)} bytes, the setup code alone "
                f"takes {self.setup_size}"
            )
        # Fields newer than the image's protocol read as zero in old images; fill the
        # documented defaults instead.
        initrd_addr_max = h.initrd_addr_max if v >= 0x0203 else OLD_INITRD_ADDR_MAX
        if initrd_addr_max == 0:
            initrd_addr_max = OLD_INITRD_ADDR_MAX
        relocatable = v >= 0x0205 and bool(h.relocatable_kernel)
        kernel_alignment = h.kernel_alignment if v >= 0x0205 else 0
        cmdline_size = h.cmdline_size if v >= 0x0206 else OLD_CMDLINE_SIZE
        xloadflags = h.xloadflags if v >= 0x020C else 0
        pref_address = h.pref_address if v >= 0x020A else DEFAULT_KERNEL_ADDR
        init_size = h.init_size if v >= 0x020A else 0
        if relocatable and (kernel_alignment == 0 or kernel_alignment & (kernel_alignment - 1)):
            raise BootError(f"bad setup header: kernel_alignment {kernel_alignment:#x}")
        self.header = SetupHeader(
            setup_sects=setup_sects,
            syssize=h.syssize,
            boot_flag=h.boot_flag,
            version=v,
            kernel_version_ptr=h.kernel_version,
            loadflags=h.loadflags,
            code32_start=h.code32_start,
            initrd_addr_max=initrd_addr_max,
            kernel_alignment=kernel_alignment,
            relocatable_kernel=relocatable,
            min_alignment=h.min_alignment if v >= 0x020A else 0,
            xloadflags=xloadflags,
            cmdline_size=cmdline_size,
            payload_offset=h.payload_offset if v >= 0x0208 else 0,
            payload_length=h.payload_length if v >= 0x0208 else 0,
            pref_address=pref_address,
            init_size=init_size,
            handover_offset=h.handover_offset if v >= 0x020B else 0,
            raw=self.data[SETUP_HEADER_OFFSET:hdr_end],
        )

    @property
    def setup(self) -> bytes:
        """The real-mode setup code (boot sector included): not needed for a 32/64-bit entry."""
        return self.data[: self.setup_size]

    @property
    def protected_mode(self) -> bytes:
        """The protected-mode kernel (decompressor + compressed payload): load at kernel_addr."""
        return self.data[self.setup_size :]

    @property
    def kernel_version(self) -> str | None:
        """The version string the header points at ("6.1.192 (user@host) #1 ..."), if any."""
        ptr = self.header.kernel_version_ptr
        if ptr == 0:
            return None
        off = ptr + 0x200
        if off >= self.setup_size:
            return None
        end = self.data.find(b"\0", off, self.setup_size)
        if end < 0:
            return None
        return self.data[off:end].decode("latin-1")


@dataclass(frozen=True)
class LoadPlan:
    """Where each piece goes in guest-physical memory, and how to enter the kernel."""

    mem_size: int
    kernel_addr: int  # protected-mode kernel (BzImage.protected_mode) goes here
    kernel_size: int
    runtime_start: int  # where the kernel decompresses and runs
    runtime_end: int  # runtime_start + init_size: must stay clear of the initrd
    zero_page_addr: int
    cmdline_addr: int
    cmdline: bytes  # NUL-terminated
    initrd_addr: int  # 0 when there is no initrd
    initrd_size: int
    entry: int  # 32-bit entry (code32_start) or 64-bit entry (+0x200)
    entry_64: bool


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a if a > 1 else x


def plan_load(
    kernel: BzImage,
    mem_size: int,
    cmdline: bytes | str = b"",
    initrd_size: int = 0,
    *,
    prefer_64: bool = True,
) -> LoadPlan:
    """Plan the load of `kernel` with an initrd of `initrd_size` bytes into `mem_size` of RAM.

    The kernel goes to pref_address when it is relocatable (else to 0x100000, from where a
    non-relocatable kernel moves itself to pref_address); the initrd as high as allowed
    below min(initrd_addr_max + 1, mem end), page-aligned, clear of the kernel's runtime area.
    The 64-bit entry is used when the kernel has XLF_KERNEL_64 and `prefer_64` is set.
    """
    h = kernel.header
    if isinstance(cmdline, str):
        cmdline = cmdline.encode()
    cmdline = cmdline.rstrip(b"\0")
    if b"\0" in cmdline:
        raise BootError("kernel command line contains a NUL byte")
    if len(cmdline) > h.cmdline_size:
        raise BootError(
            f"kernel command line of {len(cmdline)} bytes exceeds the kernel's "
            f"cmdline_size {h.cmdline_size}"
        )
    if mem_size < 2 * HIGH_RAM_START:
        raise BootError(f"too little memory: {mem_size} bytes, need at least 2 MiB")
    kernel_size = len(kernel.protected_mode)
    pref = h.pref_address if h.pref_address >= HIGH_RAM_START else DEFAULT_KERNEL_ADDR
    if h.relocatable_kernel:
        kernel_addr = _align_up(pref, h.kernel_alignment)
        runtime_start = kernel_addr
    else:
        kernel_addr = DEFAULT_KERNEL_ADDR
        runtime_start = max(pref, DEFAULT_KERNEL_ADDR)
    # init_size covers decompressor + decompressed kernel + bss; older headers lack it, so
    # estimate it as four times the compressed kernel (typical ratio ~3x plus bss).
    init_size = h.init_size or 4 * kernel_size
    runtime_end = runtime_start + init_size
    kernel_end = kernel_addr + kernel_size
    need = max(runtime_end, kernel_end)
    if need > mem_size:
        raise BootError(
            f"too little memory: the kernel needs RAM up to {need:#x} "
            f"({need >> 20} MiB), the machine has {mem_size >> 20} MiB"
        )
    entry_64 = prefer_64 and h.kernel_64
    if entry_64:
        entry = kernel_addr + 0x200
    else:
        entry = kernel_addr  # code32_start, adjusted to where we load the kernel

    initrd_addr = 0
    if initrd_size:
        limit = min(h.initrd_addr_max + 1, mem_size)
        if not h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
            limit = min(limit, 1 << 32)
        initrd_addr = (limit - initrd_size) & ~(PAGE - 1)
        lowest = _align_up(max(runtime_end, kernel_end), PAGE)
        if limit < initrd_size or initrd_addr < lowest:
            raise BootError(
                f"too little memory for kernel+initrd: the kernel uses up to {lowest:#x}, the "
                f"initrd ({initrd_size} bytes) must end below {limit:#x}"
            )
    return LoadPlan(
        mem_size=mem_size,
        kernel_addr=kernel_addr,
        kernel_size=kernel_size,
        runtime_start=runtime_start,
        runtime_end=runtime_end,
        zero_page_addr=ZERO_PAGE_ADDR,
        cmdline_addr=CMDLINE_ADDR,
        cmdline=cmdline + b"\0",
        initrd_addr=initrd_addr,
        initrd_size=initrd_size,
        entry=entry,
        entry_64=entry_64,
    )


def default_e820(mem_size: int) -> list[tuple[int, int, int]]:
    """(addr, size, type): RAM below 0x9f000, reserved 0x9f000-1 MiB, RAM from 1 MiB up."""
    if mem_size <= HIGH_RAM_START:
        raise BootError(f"too little memory for an e820 map: {mem_size} bytes")
    return [
        (0, LOW_RAM_END, E820_RAM),
        (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820_RESERVED),
        (HIGH_RAM_START, mem_size - HIGH_RAM_START, E820_RAM),
    ]


def build_boot_params(
    kernel: BzImage,
    plan: LoadPlan,
    e820: Sequence[tuple[int, int, int]] | None = None,
    *,
    quiet: bool = False,
) -> bytes:
    """The 4096-byte boot_params (zero page) for `plan`, with the kernel's setup header."""
    h = kernel.header
    bp = bytearray(ZERO_PAGE_SIZE)
    # screen_info stays zero (no text screen): the decompressor then never writes to VGA
    # memory or the CRT ports, which would be MMIO/PIO exits in a serial-only machine.
    # The setup header as the image has it; then the fields a boot loader must fill.
    bp[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(h.raw)] = h.raw
    hdr = SETUP_HEADER.parse(bytes(bp[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + 0x7B]))
    hdr.vid_mode = 0xFFFF  # "normal"
    hdr.type_of_loader = 0xFF  # undefined/other loader
    flags = hdr.loadflags | CAN_USE_HEAP
    flags = (flags | QUIET_FLAG) if quiet else (flags & ~QUIET_FLAG)
    hdr.loadflags = flags & ~KEEP_SEGMENTS
    hdr.heap_end_ptr = 0xE000 - 0x200  # per boot.rst for a modern loader
    hdr.code32_start = plan.kernel_addr
    hdr.cmd_line_ptr = plan.cmdline_addr & 0xFFFFFFFF
    hdr.ramdisk_image = plan.initrd_addr & 0xFFFFFFFF
    hdr.ramdisk_size = plan.initrd_size & 0xFFFFFFFF
    hdr.setup_data = 0
    hdr.hardware_subarch = 0
    hdr.hardware_subarch_data = 0
    built = SETUP_HEADER.build(hdr)
    # Only write back the part of the header this kernel's protocol defines.
    n = min(len(h.raw), len(built))
    bp[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + n] = built[:n]
    struct.pack_into("<I", bp, BP_EXT_RAMDISK_IMAGE, plan.initrd_addr >> 32)
    struct.pack_into("<I", bp, BP_EXT_RAMDISK_SIZE, plan.initrd_size >> 32)
    struct.pack_into("<I", bp, BP_EXT_CMD_LINE_PTR, plan.cmdline_addr >> 32)
    alt_mem_k = (plan.mem_size - HIGH_RAM_START) // 1024
    struct.pack_into("<I", bp, BP_ALT_MEM_K, min(alt_mem_k, 0xFFFFFFFF))
    table = list(e820) if e820 is not None else default_e820(plan.mem_size)
    if len(table) > E820_MAX_ENTRIES_ZEROPAGE:
        raise BootError(f"e820 map of {len(table)} entries: the zero page holds 128")
    bp[BP_E820_ENTRIES] = len(table)
    for i, (addr, size, typ) in enumerate(table):
        if not (0 <= addr < 1 << 64 and 0 <= size < 1 << 64 and 0 <= typ < 1 << 32):
            raise BootError(f"bad e820 entry {i}: addr {addr:#x} size {size:#x} type {typ}")
        off = BP_E820_TABLE + i * E820_ENTRY.sizeof()
        bp[off : off + E820_ENTRY.sizeof()] = E820_ENTRY.build(
            {"addr": addr, "size": size, "type": typ}
        )
    bp[BP_SENTINEL] = 0  # a sentinel of 0xff would make the kernel wipe the "broken" fields
    return bytes(bp)


# ---- CPU state at the kernel's entry (boot.rst, "32-bit boot protocol" / "64-bit") ----

BOOT_CS = 0x10  # __BOOT_CS: the GDT must have a flat 4 GiB code segment here
BOOT_DS = 0x18  # __BOOT_DS: and a flat 4 GiB read/write data segment here
GDT_CODE32 = 0x00CF9A000000FFFF  # base 0, limit 4 GiB, 32-bit, execute/read
GDT_CODE64 = 0x00AF9A000000FFFF  # base 0, limit 4 GiB, long mode (L=1), execute/read
GDT_DATA = 0x00CF92000000FFFF  # base 0, limit 4 GiB, read/write


def boot_gdt(long_mode: bool = False) -> bytes:
    """A 4-entry GDT (32 bytes) with the flat segments the entry expects at 0x10 and 0x18."""
    code = GDT_CODE64 if long_mode else GDT_CODE32
    return struct.pack("<4Q", 0, 0, code, GDT_DATA)


def entry_registers(plan: LoadPlan) -> dict[str, int]:
    """General registers at the entry: ESI/RSI = zero page, EBP, EDI, EBX zero; the VMM also
    loads CS=BOOT_CS, DS=ES=SS=BOOT_DS, clears IF, and turns paging off for the 32-bit entry
    (identity-mapped long mode for the 64-bit one)."""
    return {"rip": plan.entry, "rsi": plan.zero_page_addr, "rbp": 0, "rdi": 0, "rbx": 0,
            "rflags": 0x2}  # fmt: skip
