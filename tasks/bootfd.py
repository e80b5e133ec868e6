"""The bootfd.img recipe: `invoke build-bootfd`.

Builds bintest/bootfd.img, a bootable FAT12 floppy holding SYSLINUX, a tiny 32-bit Linux
kernel (Debian's linux-source-6.1, tinyconfig + kvmport_bootfd.config) and an initramfs whose
/init is bintest/bootfd/init.c.  Everything is reproducible: fixed build timestamps, user and
host, cpio mtimes, FAT volume id and file times.  See docs/bootfd.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from invoke import Context, task

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "bintest" / "bootfd"  # the recipe's inputs: configs, init.c
BUILD = ROOT / "build" / "bootfd"
IMAGE = ROOT / "bintest" / "bootfd.img"
SHA_FILE = ROOT / "bintest" / "bootfd.img.sha256"

LINUX_SOURCE_PKG = "linux-source-6.1"
LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
SOURCE_DATE_EPOCH = 1704067200  # 2024-01-01 00:00:00 UTC
VOLUME_ID = "4b564d50"  # "KVMP"
FLOPPY_KIB = (1440, 2880)

APT_PACKAGES = [
    LINUX_SOURCE_PKG,
    "build-essential",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
    "gzip",
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
]

REPRO_ENV = {
    "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
    "KBUILD_BUILD_TIMESTAMP": "2024-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "kvmport",
    "KBUILD_BUILD_HOST": "kvmport",
    "KBUILD_BUILD_VERSION": "1",
    "TZ": "UTC",
    "LC_ALL": "C",
}

INIT_CFLAGS = [
    "-m32", "-Os", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-nostdlib", "-static", "-no-pie",
    "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-s",
]  # fmt: skip


def _run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    env = {**os.environ, **REPRO_ENV, **kw.pop("env", {})}  # type: ignore[dict-item]
    subprocess.run([str(c) for c in cmd], check=True, env=env, **kw)  # type: ignore[call-overload]


def _missing_packages() -> list[str]:
    missing = []
    for pkg in APT_PACKAGES:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    return missing


def ensure_packages() -> None:
    missing = _missing_packages()
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run([*prefix, "apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)


def _source_tree() -> Path:
    src = BUILD / "linux-source-6.1"
    stamp = BUILD / ".source-stamp"
    want = f"{LINUX_TARBALL.stat().st_size} {LINUX_TARBALL.stat().st_mtime_ns}"
    if src.is_dir() and stamp.exists() and stamp.read_text() == want:
        return src
    if src.exists():
        shutil.rmtree(src)
    BUILD.mkdir(parents=True, exist_ok=True)
    _run(["tar", "-C", BUILD, "-xf", LINUX_TARBALL])
    stamp.write_text(want)
    return src


def build_kernel(jobs: int) -> Path:
    src = _source_tree()
    obj = BUILD / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "kvmport_bootfd.config", src / "arch/x86/configs/kvmport_bootfd.config")
    make = ["make", "-C", src, f"O={obj}", "ARCH=i386", "-s"]
    _run([*make, "tinyconfig", "kvmport_bootfd.config"])
    # The fragment must have stuck: a renamed or dependent option silently dropping
    # would change the machine the kernel expects.
    config = (obj / ".config").read_text()
    for line in (HERE / "kvmport_bootfd.config").read_text().splitlines():
        if line.startswith("CONFIG_") and line not in config.splitlines():
            raise SystemExit(f"kernel config: {line!r} did not survive olddefconfig")
    _run([*make, f"-j{jobs}", "bzImage"])
    (obj / ".version").unlink(missing_ok=True)
    return obj / "arch/x86/boot/bzImage"


def build_init(out: Path) -> Path:
    init = out / "init"
    _run(["gcc", *INIT_CFLAGS, "-o", init, HERE / "init.c"])
    # gen_init_cpio stores a regular file's own mtime (-t covers only dirs and nodes).
    os.utime(init, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    return init


def build_initramfs(obj: Path, init: Path, out: Path) -> Path:
    listing = (HERE / "initramfs.list").read_text().replace("@INIT@", str(init))
    list_file = out / "initramfs.list"
    list_file.write_text(listing)
    cpio = subprocess.run(
        [str(obj / "usr/gen_init_cpio"), "-t", str(SOURCE_DATE_EPOCH), str(list_file)],
        check=True,
        capture_output=True,
    ).stdout
    initrd = out / "initrd.gz"
    gz = subprocess.run(["gzip", "-n", "-9", "-c"], input=cpio, check=True, capture_output=True)
    initrd.write_bytes(gz.stdout)
    return initrd


def build_floppy(kernel: Path, initrd: Path, out: Path) -> Path:
    staged = out / "files"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir()
    files = {
        "vmlinuz": kernel,
        "initrd.gz": initrd,
        "syslinux.cfg": HERE / "syslinux.cfg",
    }
    for name, path in files.items():
        shutil.copy(path, staged / name)
        os.utime(staged / name, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    payload = sum((staged / n).stat().st_size for n in files)
    # ldlinux.sys + ldlinux.c32 take about 130 KiB; keep a margin for FAT overhead.
    kib = next((k for k in FLOPPY_KIB if payload + 200 * 1024 < k * 1024), None)
    if kib is None:
        raise SystemExit(f"kernel+initramfs ({payload} bytes) do not fit a 2.88 MB floppy")
    img = out / "bootfd.img"
    img.unlink(missing_ok=True)
    _run(["mkfs.fat", "-C", "-F", "12", "-n", "KVMPORT", "-i", VOLUME_ID, "--invariant",
          img, str(kib)])  # fmt: skip
    _run(["syslinux", "--install", img])
    for name in files:
        _run(["mcopy", "-m", "-i", img, staged / name, f"::{name}"])
    _run(["mdir", "-i", img, "::"])
    return img


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@task(
    help={
        "jobs": "parallel make jobs (default 2: the machine is shared)",
        "check": "build into build/bootfd and compare with the committed image; do not replace it",
        "apt": "apt-get install missing build packages (default on)",
    }
)
def build_bootfd(c: Context, jobs: int = 2, check: bool = False, apt: bool = True) -> None:
    """Build bintest/bootfd.img (kernel, initramfs, SYSLINUX floppy) and its sha256."""
    if apt:
        ensure_packages()
    elif missing := _missing_packages():
        raise SystemExit(f"missing packages: {' '.join(missing)} (run without --no-apt)")
    t0 = time.monotonic()
    out = BUILD / "out"
    out.mkdir(parents=True, exist_ok=True)
    kernel = build_kernel(jobs)
    t_kernel = time.monotonic() - t0
    init = build_init(out)
    initrd = build_initramfs(kernel.parents[3], init, out)
    img = build_floppy(kernel, initrd, out)
    digest = sha256(img)
    print(
        f"bzImage {kernel.stat().st_size} bytes, init {init.stat().st_size} bytes, "
        f"initrd.gz {initrd.stat().st_size} bytes, image {img.stat().st_size} bytes"
    )
    print(f"kernel step {t_kernel:.0f} s, total {time.monotonic() - t0:.0f} s")
    print(f"sha256 {digest}")
    if check:
        committed = SHA_FILE.read_text().split()[0] if SHA_FILE.exists() else "(none)"
        if committed != digest:
            raise SystemExit(f"not reproduced: built {digest}, committed {committed}")
        print("reproduced the committed bintest/bootfd.img")
        return
    shutil.copy(img, IMAGE)
    SHA_FILE.write_text(f"{digest}  bootfd.img\n")
    print(f"wrote {IMAGE.relative_to(ROOT)} and {SHA_FILE.relative_to(ROOT)}")
