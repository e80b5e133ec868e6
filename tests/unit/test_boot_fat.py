"""pyhost.boot.fat: FAT12/16 reading, against built images, mkfs.fat/mtools images,
the committed bootfd.img, and malformed inputs (only BootError may come out)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyhost.boot import BootError
from pyhost.boot.fat import FatImage, lfn_checksum
from pyhost.boot.fatbuild import build_fat_image
from pyhost.errors import PyhostError

ROOT = Path(__file__).resolve().parents[2]
BOOTFD = ROOT / "bintest" / "bootfd.img"

FILES = {
    "/syslinux.cfg": b"DEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n",
    "/VMLINUZ": bytes(range(256)) * 40,  # 10240 bytes: 20 clusters
    "/A Long File Name With Spaces.txt": b"long " * 1000,
    "/empty": b"",
    "/boot/grub/menu.lst": b"default 0\ntitle x\nkernel /vmlinuz\n",
    "/sub/dir/deep.bin": bytes(range(251)) * 9,
}


@pytest.fixture(scope="module")
def fat12() -> FatImage:
    return FatImage(build_fat_image(FILES))


def test_builds_and_reads_fat12(fat12: FatImage) -> None:
    assert fat12.fat_type == 12
    assert fat12.cluster_size == 512
    for path, content in FILES.items():
        assert fat12.read_file(path) == content, path


def test_listdir_long_names_and_dirs(fat12: FatImage) -> None:
    assert sorted(fat12.listdir("/")) == sorted(
        ["syslinux.cfg", "VMLINUZ", "A Long File Name With Spaces.txt", "empty", "boot", "sub"]
    )
    assert fat12.listdir("/boot") == ["grub"]
    assert fat12.listdir("/boot/grub/") == ["menu.lst"]
    entries = {e.name: e for e in fat12.scandir("/")}
    assert entries["boot"].is_dir and not entries["VMLINUZ"].is_dir
    assert entries["VMLINUZ"].size == 10240
    assert entries["A Long File Name With Spaces.txt"].short_name == "ALONGF~1.TXT"


def test_lookups_are_case_insensitive_and_accept_short_names(fat12: FatImage) -> None:
    assert fat12.read_file("/SYSLINUX.CFG") == FILES["/syslinux.cfg"]
    assert fat12.read_file("vmlinuz") == FILES["/VMLINUZ"]
    assert fat12.read_file("/a long file name with spaces.TXT") == b"long " * 1000
    assert fat12.read_file("/ALONGF~1.TXT") == b"long " * 1000
    assert fat12.read_file("\\BOOT\\GRUB\\MENU.LST") == FILES["/boot/grub/menu.lst"]
    assert fat12.read_file("/Sub/./Dir/DEEP.BIN") == FILES["/sub/dir/deep.bin"]
    assert fat12.exists("/boot/grub") and not fat12.is_file("/boot/grub")
    assert fat12.is_file("/empty") and fat12.read_file("/empty") == b""


def test_missing_paths_and_wrong_kinds(fat12: FatImage) -> None:
    with pytest.raises(BootError, match="no such file"):
        fat12.read_file("/nope.cfg")
    with pytest.raises(BootError, match="is a directory"):
        fat12.read_file("/boot")
    with pytest.raises(BootError, match="not a directory"):
        fat12.listdir("/VMLINUZ")
    with pytest.raises(BootError, match="not a directory"):
        fat12.read_file("/VMLINUZ/x")
    assert not fat12.exists("/boot/nothing")


def test_fat16() -> None:
    img = FatImage(build_fat_image(FILES, size=16 << 20, sectors_per_cluster=4))
    assert img.fat_type == 16
    assert img.cluster_count > 4085
    for path, content in FILES.items():
        assert img.read_file(path) == content


def test_boot_error_is_a_pyhost_error() -> None:
    assert issubclass(BootError, PyhostError)


def test_lfn_checksum_known_value() -> None:
    # Computed by hand from the VFAT rotate-right-and-add rule.
    s = 0
    for b in b"README  TXT":
        s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
    assert lfn_checksum(b"README  TXT") == s


# ---- images from the real tools ----

needs_mtools = pytest.mark.skipif(
    shutil.which("mkfs.fat") is None or shutil.which("mcopy") is None,
    reason="dosfstools/mtools not installed (the construct-built images cover the reader)",
)


@needs_mtools
@pytest.mark.parametrize("fat_bits,size_kib", [(12, 1440), (16, 16384)])
def test_reads_mkfs_fat_and_mcopy_images(tmp_path: Path, fat_bits: int, size_kib: int) -> None:
    img = tmp_path / "disk.img"
    subprocess.run(
        ["mkfs.fat", "-C", "-F", str(fat_bits), "-n", "TEST", str(img), str(size_kib)],
        check=True,
        capture_output=True,
    )
    src = tmp_path / "src"
    (src / "Boot" / "Syslinux").mkdir(parents=True)
    (src / "Boot" / "Syslinux" / "syslinux.cfg").write_bytes(b"DEFAULT a\n")
    (src / "Mixed Case Long Name.Data").write_bytes(b"\x00\x01" * 3000)
    (src / "UPPER.TXT").write_bytes(b"upper")
    for name in ("Boot", "Mixed Case Long Name.Data", "UPPER.TXT"):
        subprocess.run(
            ["mcopy", "-s", "-i", str(img), str(src / name), "::"],
            check=True,
            capture_output=True,
        )
    fs = FatImage(img.read_bytes())
    assert fs.fat_type == fat_bits
    assert sorted(fs.listdir("/")) == ["Boot", "Mixed Case Long Name.Data", "UPPER.TXT"]
    assert fs.read_file("/boot/syslinux/SYSLINUX.CFG") == b"DEFAULT a\n"
    assert fs.read_file("/mixed case long name.data") == b"\x00\x01" * 3000
    assert fs.read_file("/upper.txt") == b"upper"
    # ...and the real fsck accepts what fatbuild writes.
    built = tmp_path / "built.img"
    built.write_bytes(
        build_fat_image(FILES, size=size_kib * 1024, sectors_per_cluster=1 if fat_bits == 12 else 4)
    )
    if shutil.which("fsck.fat"):
        fsck = subprocess.run(["fsck.fat", "-n", str(built)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    mtype = subprocess.run(["mtype", "-i", str(built), "::/sub/dir/deep.bin"], capture_output=True)
    assert mtype.stdout == FILES["/sub/dir/deep.bin"]


# ---- the committed boot floppy ----


def test_bootfd_image_matches_its_sha256() -> None:
    import hashlib

    want = (ROOT / "bintest" / "bootfd.img.sha256").read_text().split()
    assert want[1] == "bootfd.img"
    assert hashlib.sha256(BOOTFD.read_bytes()).hexdigest() == want[0]


def test_bootfd_image_contents() -> None:
    fs = FatImage(BOOTFD.read_bytes())
    assert fs.fat_type == 12
    assert len(fs.data) in (1474560, 2949120)
    names = {n.lower() for n in fs.listdir("/")}
    assert {"ldlinux.sys", "ldlinux.c32", "vmlinuz", "initrd.gz", "syslinux.cfg"} <= names
    assert fs.read_file("/vmlinuz")[0x202:0x206] == b"HdrS"
    assert fs.read_file("/initrd.gz")[:2] == b"\x1f\x8b"
    assert b"kvmport" in fs.read_file("/SYSLINUX.CFG").lower()
    assert fs.read_file("/syslinux.cfg") == (ROOT / "bintest/bootfd/syslinux.cfg").read_bytes()


# ---- malformed input: BootError only ----


def _fat12_raw() -> bytearray:
    return bytearray(build_fat_image({"/a.bin": b"A" * 3000, "/d/b.txt": b"b"}))


def _set_fat12(img: bytearray, cluster: int, value: int) -> None:
    fat_off = 512
    for copy in range(2):
        base = fat_off + copy * struct.unpack_from("<H", img, 22)[0] * 512
        off = base + cluster + cluster // 2
        if cluster & 1:
            img[off] = (img[off] & 0x0F) | ((value << 4) & 0xF0)
            img[off + 1] = (value >> 4) & 0xFF
        else:
            img[off] = value & 0xFF
            img[off + 1] = (img[off + 1] & 0xF0) | (value >> 8)


def test_cluster_chain_loop_is_detected() -> None:
    img = _fat12_raw()
    fs = FatImage(bytes(img))
    first = fs.stat("/a.bin").cluster
    assert fs.chain(first) == list(range(first, first + 6))
    _set_fat12(img, first + 3, first + 1)  # 4th cluster points back to the 2nd
    with pytest.raises(BootError, match="loops"):
        FatImage(bytes(img)).read_file("/a.bin")
    _set_fat12(img, first, first)  # self-loop
    with pytest.raises(BootError, match="loops"):
        FatImage(bytes(img)).read_file("/a.bin")


@pytest.mark.parametrize(
    "value,match", [(0, "free cluster"), (0xFF7, "bad cluster"), (0xFF0, "outside")]
)
def test_corrupt_chain_links(value: int, match: str) -> None:
    img = _fat12_raw()
    first = FatImage(bytes(img)).stat("/a.bin").cluster
    _set_fat12(img, first + 1, value)
    with pytest.raises(BootError, match=match):
        FatImage(bytes(img)).read_file("/a.bin")


def test_chain_shorter_than_file_size() -> None:
    img = _fat12_raw()
    first = FatImage(bytes(img)).stat("/a.bin").cluster
    _set_fat12(img, first + 1, 0xFFF)
    with pytest.raises(BootError, match="only 2 cluster"):
        FatImage(bytes(img)).read_file("/a.bin")


def test_directory_chain_loop() -> None:
    img = _fat12_raw()
    d = FatImage(bytes(img)).stat("/d").cluster
    _set_fat12(img, d, d)
    with pytest.raises(BootError, match="loops"):
        FatImage(bytes(img)).listdir("/d")


@pytest.mark.parametrize(
    "offset,fmt,value,match",
    [
        (11, "<H", 0, "bytes per sector"),
        (11, "<H", 513, "bytes per sector"),
        (13, "<B", 0, "sectors per cluster"),
        (13, "<B", 3, "sectors per cluster"),
        (14, "<H", 0, "reserved sectors"),
        (16, "<B", 0, "FATs"),
        (17, "<H", 0, "root directory entries"),
        (19, "<H", 0, "total sector count"),
        (22, "<H", 0, "sectors per FAT is 0"),
        (22, "<H", 3000, "fills the volume"),
        (19, "<H", 30, "fills the volume"),
    ],
)
def test_bad_bpb(offset: int, fmt: str, value: int, match: str) -> None:
    img = _fat12_raw()
    struct.pack_into(fmt, img, offset, value)
    with pytest.raises(BootError, match=match):
        FatImage(bytes(img))


def test_fat_too_small_for_clusters() -> None:
    img = build_fat_image({"/a": b"x"}, size=8 << 20)  # FAT16, 16365 clusters, 64 sectors/FAT
    raw = bytearray(img)
    struct.pack_into("<H", raw, 22, 2)
    with pytest.raises(BootError, match="cannot map 16365 clusters"):
        FatImage(bytes(raw))


def test_truncated_images() -> None:
    img = _fat12_raw()
    with pytest.raises(BootError, match="too small"):
        FatImage(img[:100])
    with pytest.raises(BootError, match="truncated"):
        FatImage(img[:2048])
    fs = FatImage(bytes(img[: 33 * 512 + 512]))  # metadata plus one data cluster
    with pytest.raises(BootError, match="truncated"):
        fs.read_file("/a.bin")


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 36 * 512), st.integers(0, 255)), min_size=1, max_size=40
    ),
    cut=st.one_of(st.none(), st.integers(0, 40 * 512)),
)
def test_fuzz_corrupted_image_raises_only_booterror(
    flips: list[tuple[int, int]], cut: int | None
) -> None:
    img = _FUZZ_BASE.copy()
    for off, val in flips:
        img[off] = val
    data = bytes(img if cut is None else img[:cut])
    _exercise(data)


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(min_size=0, max_size=4096))
def test_fuzz_random_bytes_raise_only_booterror(data: bytes) -> None:
    _exercise(data)


_FUZZ_BASE = bytearray(
    build_fat_image(
        {"/syslinux.cfg": b"x" * 700, "/Long Name.txt": b"y" * 1500, "/d/e/f.bin": b"z" * 600},
        size=40 * 512,
        root_entries=16,
    )
)


def _exercise(data: bytes) -> None:
    try:
        fs = FatImage(data)
    except BootError:
        return
    _walk(fs, "/", 0)


def _walk(fs: FatImage, path: str, depth: int) -> None:
    if depth > 4:
        return
    try:
        entries = fs.scandir(path)
    except BootError:
        return
    for e in entries[:20]:
        sub = path.rstrip("/") + "/" + e.name
        try:
            if e.is_dir:
                _walk(fs, sub, depth + 1)
            else:
                fs.read_file(sub)
        except BootError:
            pass


def test_fuzz_base_image_is_valid() -> None:
    fs = FatImage(bytes(_FUZZ_BASE))
    assert fs.read_file("/long name.txt") == b"y" * 1500
    assert fs.read_file("/D/E/F.BIN") == b"z" * 600
