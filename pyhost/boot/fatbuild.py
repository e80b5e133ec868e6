"""Build small FAT12/FAT16 images in memory (for tests and throwaway boot disks).

    data = build_fat_image({"/syslinux.cfg": b"...", "/boot/vmlinuz": kernel})

Names that are not plain upper-case 8.3 get VFAT long-name entries and a `~N` short name.
No boot code is written (the boot sector holds only a BPB and the 0x55AA signature).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from pyhost.boot import BootError
from pyhost.boot.fat import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    ATTR_LFN,
    ATTR_VOLUME_ID,
    DIRENT,
    lfn_checksum,
)

_SHORT_OK = re.compile(r"^[A-Z0-9_$~!#%&\-{}()@'`^]{1,8}(\.[A-Z0-9_$~!#%&\-{}()@'`^]{1,3})?$")
_DATE = ((2024 - 1980) << 9) | (1 << 5) | 1  # 2024-01-01


@dataclass
class _Node:
    name: str
    data: bytes | None = None  # None for a directory
    children: dict[str, _Node] = field(default_factory=dict)
    cluster: int = 0
    short: bytes = b""


def _short_candidates(name: str) -> tuple[bytes, bool]:
    """(11-byte 8.3 name, needs a long name entry)."""
    if _SHORT_OK.match(name):
        base, _, ext = name.partition(".")
        return base.ljust(8).encode() + ext.ljust(3).encode(), False
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    clean = re.sub(r"[^A-Z0-9_]", "", base.upper()) or "FILE"
    ext_clean = re.sub(r"[^A-Z0-9_]", "", ext.upper())[:3]
    return clean[:8].ljust(8).encode() + ext_clean.ljust(3).encode(), True


def _lfn_entries(name: str, short: bytes) -> list[bytes]:
    units = name.encode("utf-16-le")
    if len(units) // 2 > 255:
        raise BootError(f"long name too long: {name[:40]}...")
    chars = [units[i : i + 2] for i in range(0, len(units), 2)]
    chunks = [chars[i : i + 13] for i in range(0, len(chars), 13)]
    csum = lfn_checksum(short)
    out = []
    for seq, chunk in enumerate(chunks, 1):
        padded = list(chunk)
        if len(padded) < 13:
            padded.append(b"\0\0")
        padded += [b"\xff\xff"] * (13 - len(padded))
        raw = b"".join(padded)
        order = seq | (0x40 if seq == len(chunks) else 0)
        out.append(
            struct.pack("<B10sBBB12sH4s", order, raw[:10], ATTR_LFN, 0, csum, raw[10:22], 0,
                        raw[22:26])
        )  # fmt: skip
    return out[::-1]


def _dirent(short: bytes, attr: int, cluster: int, size: int) -> bytes:
    return DIRENT.build(
        {
            "name": short[:8], "ext": short[8:], "attr": attr, "nt_reserved": 0,
            "create_time_tenth": 0, "create_time": 0, "create_date": _DATE,
            "access_date": _DATE, "cluster_hi": 0, "write_time": 0, "write_date": _DATE,
            "cluster": cluster, "size": size,
        }
    )  # fmt: skip


def build_fat_image(
    files: dict[str, bytes],
    size: int = 1474560,
    *,
    sectors_per_cluster: int = 1,
    root_entries: int = 224,
    label: str = "KVMPORT",
) -> bytes:
    """A FAT volume of `size` bytes holding `files` ({"/dir/name": contents}).

    The FAT type follows from the cluster count (FAT12 below 4085 clusters, else FAT16).
    """
    bps = 512
    total = size // bps
    root = _Node("/")
    for path, data in files.items():
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise BootError(f"bad path {path!r}")
        node = root
        for part in parts[:-1]:
            node = node.children.setdefault(part.upper(), _Node(part))
            if node.data is not None:
                raise BootError(f"{part} is both a file and a directory")
        node.children[parts[-1].upper()] = _Node(parts[-1], data=bytes(data))

    root_sectors = (root_entries * 32 + bps - 1) // bps
    # Size the FAT: iterate until the cluster count fits the FAT it implies.
    spf = 1
    while True:
        data_sectors = total - 1 - 2 * spf - root_sectors
        if data_sectors <= 0:
            raise BootError(f"image of {size} bytes too small")
        clusters = data_sectors // sectors_per_cluster
        bits = 12 if clusters < 4085 else 16
        if clusters >= 65525:
            raise BootError("too many clusters for FAT16: raise sectors_per_cluster")
        need = ((clusters + 2) * bits + 7) // 8
        if need <= spf * bps:
            break
        spf += 1
    cluster_size = bps * sectors_per_cluster
    data_start = (1 + 2 * spf + root_sectors) * bps
    image = bytearray(total * bps)
    fat = [0] * (clusters + 2)
    fat[0] = 0xFF0 if bits == 12 else 0xFFF0
    fat[1] = 0xFFF if bits == 12 else 0xFFFF
    eoc = 0xFFF if bits == 12 else 0xFFFF
    next_free = 2

    def alloc(content: bytes) -> int:
        nonlocal next_free
        n = max(1, (len(content) + cluster_size - 1) // cluster_size)
        if next_free + n > clusters + 2:
            raise BootError("files do not fit the image")
        first = next_free
        for i in range(n):
            c = first + i
            fat[c] = c + 1 if i + 1 < n else eoc
            off = data_start + (c - 2) * cluster_size
            chunk = content[i * cluster_size : (i + 1) * cluster_size]
            image[off : off + len(chunk)] = chunk
        next_free += n
        return first

    def dir_bytes(node: _Node, parent_cluster: int) -> bytes:
        out = bytearray()
        if node is not root:
            out += _dirent(b".          ", ATTR_DIRECTORY, node.cluster, 0)
            out += _dirent(b"..         ", ATTR_DIRECTORY, parent_cluster, 0)
        else:
            lab = label.upper()[:11].ljust(11).encode()
            out += _dirent(lab, ATTR_VOLUME_ID, 0, 0)
        used: set[bytes] = set()
        for child in node.children.values():
            short, needs_lfn = _short_candidates(child.name)
            if needs_lfn or short in used:
                base = short[:8].rstrip(b" ")
                for n in range(1, 100):
                    tail = b"~%d" % n
                    cand = (base[: 8 - len(tail)] + tail).ljust(8) + short[8:]
                    if cand not in used:
                        short = cand
                        break
                needs_lfn = True
            used.add(short)
            child.short = short
            if needs_lfn:
                for e in _lfn_entries(child.name, short):
                    out += e
            if child.data is None:
                out += _dirent(short, ATTR_DIRECTORY, child.cluster, 0)
            else:
                out += _dirent(short, ATTR_ARCHIVE, child.cluster, len(child.data))
        return bytes(out)

    # Allocate files first, then directories bottom-up (a directory's size is known after
    # its children are named), writing each directory's clusters at the end.
    def place(node: _Node) -> None:
        for child in node.children.values():
            if child.data is None:
                place(child)
            elif child.data:
                child.cluster = alloc(child.data)
        if node is not root:
            # Reserve the directory's clusters now; fill them once the parent is known.
            entries = 2 + sum(1 + (len(c.name) + 12) // 13 for c in node.children.values())
            node.cluster = alloc(b"\0" * entries * 32)

    def fill(node: _Node, parent_cluster: int) -> None:
        raw = dir_bytes(node, parent_cluster)
        if node is root:
            if len(raw) > root_entries * 32:
                raise BootError("too many entries for the root directory")
            off = (1 + 2 * spf) * bps
            image[off : off + len(raw)] = raw
        else:
            off = data_start + (node.cluster - 2) * cluster_size
            image[off : off + len(raw)] = raw
        for child in node.children.values():
            if child.data is None:
                fill(child, 0 if node is root else node.cluster)

    place(root)
    fill(root, 0)

    struct.pack_into(
        "<3s8sHBHBHHBHHHIIBBBI11s8s", image, 0, b"\xeb\x3c\x90", b"KVMPORT ", bps,
        sectors_per_cluster, 1, 2, root_entries, total if total < 0x10000 else 0,
        0xF0, spf, 18, 2, 0, total if total >= 0x10000 else 0, 0, 0, 0x29, 0x4B564D50,
        label.upper()[:11].ljust(11).encode(), b"FAT12   " if bits == 12 else b"FAT16   ",
    )  # fmt: skip
    image[510:512] = b"\x55\xaa"
    fat_bytes = bytearray(spf * bps)
    for c, v in enumerate(fat):
        if bits == 12:
            off = c + c // 2
            if c & 1:
                fat_bytes[off] = (fat_bytes[off] & 0x0F) | ((v << 4) & 0xF0)
                fat_bytes[off + 1] = (v >> 4) & 0xFF
            else:
                fat_bytes[off] = v & 0xFF
                fat_bytes[off + 1] = (fat_bytes[off + 1] & 0xF0) | ((v >> 8) & 0x0F)
        else:
            struct.pack_into("<H", fat_bytes, c * 2, v)
    for i in range(2):
        off = (1 + i * spf) * bps
        image[off : off + len(fat_bytes)] = fat_bytes
    return bytes(image)
