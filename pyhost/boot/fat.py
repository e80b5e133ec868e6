"""Read-only FAT12/FAT16 filesystem reader for boot images (floppies, small disks).

    img = FatImage(Path("bintest/bootfd.img").read_bytes())
    img.listdir("/")                 # ['ldlinux.sys', 'syslinux.cfg', ...]
    img.read_file("/SYSLINUX.CFG")   # lookups are case-insensitive, long or 8.3 names

The image may be a bare filesystem (a floppy) or start with an MBR whose first partition
holds the filesystem (see `FatImage.from_disk`).  Every malformed input raises `BootError`:
bad BPB, truncated image, cluster chains that loop, leave the volume or end early.
"""

from __future__ import annotations

from dataclasses import dataclass

import construct as cs

from pyhost.boot import BootError

ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LFN = 0x0F

DIRENT_SIZE = 32

BPB = cs.Struct(
    "jump" / cs.Bytes(3),
    "oem_name" / cs.Bytes(8),
    "bytes_per_sector" / cs.Int16ul,
    "sectors_per_cluster" / cs.Int8ul,
    "reserved_sectors" / cs.Int16ul,
    "num_fats" / cs.Int8ul,
    "root_entries" / cs.Int16ul,
    "total_sectors_16" / cs.Int16ul,
    "media" / cs.Int8ul,
    "sectors_per_fat" / cs.Int16ul,
    "sectors_per_track" / cs.Int16ul,
    "num_heads" / cs.Int16ul,
    "hidden_sectors" / cs.Int32ul,
    "total_sectors_32" / cs.Int32ul,
    # FAT12/16 extended BPB
    "drive_number" / cs.Int8ul,
    "reserved1" / cs.Int8ul,
    "boot_signature" / cs.Int8ul,
    "volume_id" / cs.Int32ul,
    "volume_label" / cs.Bytes(11),
    "fs_type" / cs.Bytes(8),
)

DIRENT = cs.Struct(
    "name" / cs.Bytes(8),
    "ext" / cs.Bytes(3),
    "attr" / cs.Int8ul,
    "nt_reserved" / cs.Int8ul,
    "create_time_tenth" / cs.Int8ul,
    "create_time" / cs.Int16ul,
    "create_date" / cs.Int16ul,
    "access_date" / cs.Int16ul,
    "cluster_hi" / cs.Int16ul,
    "write_time" / cs.Int16ul,
    "write_date" / cs.Int16ul,
    "cluster" / cs.Int16ul,
    "size" / cs.Int32ul,
)

LFN_ENTRY = cs.Struct(
    "seq" / cs.Int8ul,
    "name1" / cs.Bytes(10),
    "attr" / cs.Int8ul,
    "type" / cs.Int8ul,
    "checksum" / cs.Int8ul,
    "name2" / cs.Bytes(12),
    "cluster" / cs.Int16ul,
    "name3" / cs.Bytes(4),
)

MBR_PARTITION = cs.Struct(
    "status" / cs.Int8ul,
    "chs_first" / cs.Bytes(3),
    "type" / cs.Int8ul,
    "chs_last" / cs.Bytes(3),
    "lba_first" / cs.Int32ul,
    "num_sectors" / cs.Int32ul,
)

FAT_PARTITION_TYPES = {0x01, 0x04, 0x06, 0x0E}


@dataclass(frozen=True)
class FatEntry:
    """One directory entry: `name` is the long name if there is one, else the 8.3 name."""

    name: str
    short_name: str
    attr: int
    cluster: int
    size: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)


def lfn_checksum(short: bytes) -> int:
    """The VFAT checksum of an 11-byte 8.3 name, stored in each of its long-name entries."""
    s = 0
    for b in short:
        s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
    return s


def _short_name(raw_name: bytes, raw_ext: bytes, nt_flags: int) -> str:
    name = raw_name
    if name[:1] == b"\x05":  # a real leading 0xE5
        name = b"\xe5" + name[1:]
    base = name.rstrip(b" ").decode("cp437")
    ext = raw_ext.rstrip(b" ").decode("cp437")
    # Windows NT stores all-lowercase 8.3 names as upper case plus these flags.
    if nt_flags & 0x08:
        base = base.lower()
    if nt_flags & 0x10:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def _lfn_chars(entry: cs.Container) -> str:
    raw = entry.name1 + entry.name2 + entry.name3
    chars = []
    for i in range(0, len(raw), 2):
        code = raw[i] | (raw[i + 1] << 8)
        if code in (0x0000, 0xFFFF):
            break
        chars.append(chr(code))
    return "".join(chars)


class FatImage:
    """A FAT12 or FAT16 filesystem in `data` (bytes of the whole volume)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        if len(self.data) < 512:
            raise BootError(f"FAT image too small: {len(self.data)} bytes, need at least 512")
        try:
            bpb = BPB.parse(self.data)
        except cs.ConstructError as e:  # pragma: no cover - length checked above
            raise BootError(f"FAT boot sector unreadable: {e}") from None
        self.bpb = bpb
        bps = bpb.bytes_per_sector
        spc = bpb.sectors_per_cluster
        if bps not in (512, 1024, 2048, 4096):
            raise BootError(f"not a FAT volume: bytes per sector {bps} (want 512..4096)")
        if spc == 0 or spc & (spc - 1) or spc > 128:
            raise BootError(f"not a FAT volume: sectors per cluster {spc}")
        if bpb.reserved_sectors == 0:
            raise BootError("not a FAT volume: 0 reserved sectors")
        if not 1 <= bpb.num_fats <= 4:
            raise BootError(f"not a FAT volume: {bpb.num_fats} FATs")
        if bpb.sectors_per_fat == 0:
            raise BootError("FAT32 (or not FAT): sectors per FAT is 0; only FAT12/16 are read")
        if bpb.root_entries == 0:
            raise BootError("FAT32 (or not FAT): 0 root directory entries")
        total = bpb.total_sectors_16 or bpb.total_sectors_32
        if total == 0:
            raise BootError("not a FAT volume: total sector count is 0")

        self.bytes_per_sector = bps
        self.cluster_size = bps * spc
        self.fat_offset = bpb.reserved_sectors * bps
        self.fat_size = bpb.sectors_per_fat * bps
        root_sectors = (bpb.root_entries * DIRENT_SIZE + bps - 1) // bps
        self.root_offset = self.fat_offset + bpb.num_fats * self.fat_size
        self.root_size = bpb.root_entries * DIRENT_SIZE
        first_data = bpb.reserved_sectors + bpb.num_fats * bpb.sectors_per_fat + root_sectors
        if first_data >= total:
            raise BootError(
                f"bad BPB: metadata ({first_data} sectors) fills the volume ({total} sectors)"
            )
        self.data_offset = first_data * bps
        self.cluster_count = (total - first_data) // spc
        if self.cluster_count < 4085:
            self.fat_type = 12
        elif self.cluster_count < 65525:
            self.fat_type = 16
        else:
            raise BootError(f"FAT32 volume ({self.cluster_count} clusters): only FAT12/16 are read")
        if self.cluster_count == 0:
            raise BootError("bad BPB: the volume has no data clusters")
        # The first FAT and the root directory must be present; data may be cut short
        # (a read of a missing cluster fails then).
        if len(self.data) < self.root_offset + self.root_size:
            raise BootError(
                f"FAT image truncated: {len(self.data)} bytes, the FAT and root directory "
                f"end at {self.root_offset + self.root_size}"
            )
        max_entries = self.fat_size * 8 // self.fat_type
        if max_entries < self.cluster_count + 2:
            raise BootError(
                f"bad BPB: a FAT of {self.fat_size} bytes cannot map {self.cluster_count} clusters"
            )
        self._fat = self.data[self.fat_offset : self.fat_offset + self.fat_size]
        self._eoc = 0xFF8 if self.fat_type == 12 else 0xFFF8
        self._bad = 0xFF7 if self.fat_type == 12 else 0xFFF7

    @classmethod
    def from_disk(cls, data: bytes | bytearray | memoryview) -> FatImage:
        """A FAT volume from a whole disk: a bare volume, or the first FAT MBR partition."""
        data = bytes(data)
        if len(data) >= 512 and data[510:512] == b"\x55\xaa":
            try:
                return cls(data)
            except BootError:
                pass
            parts = cs.Array(4, MBR_PARTITION).parse(data[446:510])
            for p in parts:
                if p.type in FAT_PARTITION_TYPES and p.num_sectors:
                    start = p.lba_first * 512
                    end = start + p.num_sectors * 512
                    if start >= len(data):
                        raise BootError(f"MBR partition starts past the end of the image ({start})")
                    return cls(data[start:end])
        return cls(data)

    # ---- low level ----

    def fat_entry(self, cluster: int) -> int:
        """The FAT's value for `cluster` (next cluster, free, bad or end of chain)."""
        if self.fat_type == 12:
            off = cluster + cluster // 2
            v = self._fat[off] | (self._fat[off + 1] << 8)
            return v >> 4 if cluster & 1 else v & 0xFFF
        off = cluster * 2
        return self._fat[off] | (self._fat[off + 1] << 8)

    def chain(self, start: int) -> list[int]:
        """The cluster chain from `start`; raises BootError on loops, bad or free links."""
        clusters: list[int] = []
        seen: set[int] = set()
        c = start
        while True:
            if not 2 <= c < self.cluster_count + 2:
                raise BootError(
                    f"FAT chain from cluster {start} reaches cluster {c}, outside 2.."
                    f"{self.cluster_count + 1}"
                )
            if c in seen:
                raise BootError(f"FAT chain from cluster {start} loops at cluster {c}")
            seen.add(c)
            clusters.append(c)
            nxt = self.fat_entry(c)
            if nxt >= self._eoc:
                return clusters
            if nxt == self._bad:
                raise BootError(f"FAT chain from cluster {start} hits bad cluster {c}")
            if nxt == 0:
                raise BootError(f"FAT chain from cluster {start} hits free cluster after {c}")
            c = nxt

    def read_cluster(self, cluster: int) -> bytes:
        off = self.data_offset + (cluster - 2) * self.cluster_size
        end = off + self.cluster_size
        if end > len(self.data):
            raise BootError(f"FAT image truncated: cluster {cluster} ends at byte {end}")
        return self.data[off:end]

    def read_chain(self, start: int, size: int | None = None) -> bytes:
        """The bytes of the chain from `start`, cut to `size` if given."""
        clusters = self.chain(start)
        if size is not None and size > len(clusters) * self.cluster_size:
            raise BootError(
                f"file of {size} bytes at cluster {start} has only {len(clusters)} "
                f"cluster(s) of {self.cluster_size} bytes"
            )
        if size is not None:
            clusters = clusters[: (size + self.cluster_size - 1) // self.cluster_size]
        out = b"".join(self.read_cluster(c) for c in clusters)
        return out if size is None else out[:size]

    # ---- directories ----

    def _parse_dir(self, raw: bytes) -> list[FatEntry]:
        entries: list[FatEntry] = []
        lfn_parts: dict[int, str] = {}
        lfn_sum = -1
        lfn_count = 0
        for off in range(0, len(raw) - DIRENT_SIZE + 1, DIRENT_SIZE):
            rec = raw[off : off + DIRENT_SIZE]
            first = rec[0]
            if first == 0x00:
                break
            if first == 0xE5:
                lfn_parts, lfn_sum = {}, -1
                continue
            attr = rec[11]
            if attr & 0x3F == ATTR_LFN:
                lfn = LFN_ENTRY.parse(rec)
                seq = lfn.seq & 0x1F
                if lfn.seq & 0x40:
                    lfn_parts, lfn_sum, lfn_count = {}, lfn.checksum, seq
                if seq == 0 or lfn.checksum != lfn_sum:
                    lfn_parts, lfn_sum = {}, -1
                    continue
                lfn_parts[seq] = _lfn_chars(lfn)
                continue
            d = DIRENT.parse(rec)
            if attr & ATTR_VOLUME_ID:
                lfn_parts, lfn_sum = {}, -1
                continue
            short = _short_name(d.name, d.ext, d.nt_reserved)
            long_name = None
            if (
                lfn_parts
                and lfn_checksum(rec[:11]) == lfn_sum
                and sorted(lfn_parts) == list(range(1, lfn_count + 1))
            ):
                long_name = "".join(lfn_parts[i] for i in sorted(lfn_parts))
            lfn_parts, lfn_sum = {}, -1
            entries.append(FatEntry(long_name or short, short, attr, d.cluster, d.size))
        return entries

    def _dir_entries(self, entry: FatEntry | None) -> list[FatEntry]:
        if entry is None or entry.cluster == 0:
            raw = self.data[self.root_offset : self.root_offset + self.root_size]
        else:
            raw = self.read_chain(entry.cluster)
        return [e for e in self._parse_dir(raw) if e.name not in (".", "..")]

    def _lookup(self, path: str) -> FatEntry | None:
        """The entry at `path` (None for the root directory)."""
        parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
        entry: FatEntry | None = None
        walked = ""
        for part in parts:
            if entry is not None and not entry.is_dir:
                raise BootError(f"FAT: {walked} is not a directory")
            want = part.casefold()
            for e in self._dir_entries(entry):
                if e.name.casefold() == want or e.short_name.casefold() == want:
                    entry = e
                    break
            else:
                raise BootError(f"FAT: no such file or directory: /{'/'.join(parts)}")
            walked += "/" + entry.name
        return entry

    def scandir(self, path: str = "/") -> list[FatEntry]:
        """The entries of the directory at `path` (without '.' and '..', volume labels)."""
        entry = self._lookup(path)
        if entry is not None and not entry.is_dir:
            raise BootError(f"FAT: not a directory: {path}")
        return self._dir_entries(entry)

    def listdir(self, path: str = "/") -> list[str]:
        """The names (long names where present) in the directory at `path`."""
        return [e.name for e in self.scandir(path)]

    def stat(self, path: str) -> FatEntry:
        entry = self._lookup(path)
        if entry is None:
            raise BootError("FAT: the root directory has no entry of its own")
        return entry

    def exists(self, path: str) -> bool:
        try:
            self._lookup(path)
        except BootError:
            return False
        return True

    def is_file(self, path: str) -> bool:
        try:
            entry = self._lookup(path)
        except BootError:
            return False
        return entry is not None and not entry.is_dir

    def read_file(self, path: str) -> bytes:
        """The contents of the file at `path` (case-insensitive, '/' or '\\' separators)."""
        entry = self._lookup(path)
        if entry is None or entry.is_dir:
            raise BootError(f"FAT: is a directory: {path}")
        if entry.size == 0:
            return b""
        return self.read_chain(entry.cluster, entry.size)
