"""Build QEMU with kvmport's patches (qemu-patches/) from Debian 12's source package.

`python3 qemu_build.py` (or `invoke build-qemu`) prints the path of qemu-system-x86_64.
The build lives in ~/.cache/kvmport/qemu-<source version>-<series hash>/: the source
package version is the one apt would fetch, the hash covers the series file and every
patch it names, so a second call with the same inputs only prints the path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from lab.common import LabError, cache_dir, cached_build, ensure_packages, log, run

ROOT = Path(__file__).resolve().parent
PATCHES = ROOT / "qemu-patches"
BINARY = "qemu-system-x86_64"

# What a minimal x86_64-softmmu build needs, as (file that proves it, Debian package).
BUILD_TOOLS: list[tuple[str, str]] = [
    ("/usr/bin/gcc", "gcc"),
    ("/usr/bin/make", "make"),
    ("/usr/bin/meson", "meson"),
    ("/usr/bin/ninja", "ninja-build"),
    ("/usr/bin/pkg-config", "pkg-config"),
    ("/usr/bin/dpkg-source", "dpkg-dev"),
    ("/usr/bin/patch", "patch"),
    ("/usr/include/glib-2.0/glib.h", "libglib2.0-dev"),
    ("/usr/include/pixman-1/pixman.h", "libpixman-1-dev"),
    ("/usr/include/zlib.h", "zlib1g-dev"),
    ("/usr/include/libfdt.h", "libfdt-dev"),  # the x86_64 target needs it (microvm)
    # firmware the built binary uses (SeaBIOS, option ROMs), Debian's paths
    ("/usr/share/qemu/kvmvapic.bin", "qemu-system-data"),
    ("/usr/share/seabios/bios-256k.bin", "seabios"),
]

# Everything off but what a PC guest on KVM or TCG needs.  Firmware comes from Debian's
# packages by absolute path: QEMU rewrites paths under its prefix relative to where the
# binary is, so the prefix is one nothing else lives under.
CONFIGURE = [
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-kvm",
    "--enable-tcg",
    "--enable-fdt=system",
    "--disable-docs",
    "--disable-tools",
    "--disable-guest-agent",
    "--disable-werror",
    "--disable-debug-info",
    "--prefix=/opt/kvmport-qemu",
    "--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu",
]


def series() -> list[Path]:
    """The patches in the series file, in order (comments and blank lines skipped)."""
    names = []
    for line in (PATCHES / "series").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(PATCHES / line)
    missing = [p.name for p in names if not p.is_file()]
    if missing:
        raise LabError(f"qemu-patches/series names missing patches: {' '.join(missing)}")
    return names


def series_hash(patches: list[Path]) -> str:
    """Short hash over the series file, the patches' names and contents, and the options."""
    h = hashlib.sha256((PATCHES / "series").read_bytes() + " ".join(CONFIGURE).encode())
    for p in patches:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def source_version() -> str:
    """The qemu source package version apt would fetch, without its epoch (the .dsc's)."""
    try:
        out = run(["apt-get", "source", "--print-uris", "-q", "qemu"], capture=True)
    except LabError as exc:
        if "deb-src" in str(exc):
            raise LabError(
                "apt has no source packages: add deb-src to the Types line of "
                "/etc/apt/sources.list.d/debian.sources, then apt-get update"
            ) from exc
        raise
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("qemu_") and parts[1].endswith(".dsc"):
            return parts[1][len("qemu_") : -len(".dsc")]
    raise LabError(f"apt-get source --print-uris qemu named no .dsc:\n{out}")


def fetch_source(version: str, dest: Path) -> Path:
    """Unpack the source package (Debian's patches applied) into dest/src."""
    dl = cache_dir() / "qemu-source" / version
    dl.mkdir(parents=True, exist_ok=True)
    dscs = list(dl.glob("*.dsc"))
    if not dscs:
        # the version apt gives (the .dsc name has no epoch, so not qemu=VERSION)
        log("apt-get source --download-only qemu")
        run(["apt-get", "source", "--download-only", "-q", "qemu"], cwd=dl, capture=True)
        dscs = list(dl.glob("*.dsc"))
    if [d.name for d in dscs] != [f"qemu_{version}.dsc"]:
        raise LabError(f"expected qemu_{version}.dsc in {dl}, found {dscs}")
    src = dest / "src"
    if src.exists():
        shutil.rmtree(src)
    run(["dpkg-source", "--no-check", "--no-copy", "-x", dscs[0], src], cwd=dest, capture=True)
    return src


def build(jobs: int = 2) -> Path:
    """Build (once) and return the patched qemu-system-x86_64."""
    patches = series()
    version = source_version()
    out = cache_dir() / f"qemu-{version.replace(':', '_')}-{series_hash(patches)}"
    binary = out / BINARY
    if binary.is_file():
        return binary
    ensure_packages(BUILD_TOOLS)

    def build_into(work: Path) -> str:
        src = fetch_source(version, work)
        for p in patches:
            log(f"patch {p.name}")
            run(["patch", "-p1", "--batch", "--forward", "-i", p], cwd=src, capture=True)
        bdir = work / "build"
        bdir.mkdir()
        log("configure: " + " ".join(CONFIGURE))
        run([src / "configure", *CONFIGURE], cwd=bdir, capture=True)
        log(f"ninja -j{jobs} {BINARY}")
        run(["ninja", f"-j{jobs}", BINARY], cwd=bdir, capture=True)
        shutil.copy2(bdir / BINARY, work / BINARY)
        # keep only the binary: the tree is ~1 GB and the key says what it was built from
        shutil.rmtree(src)
        shutil.rmtree(bdir)
        return (f"source qemu {version}\npatches {' '.join(p.name for p in patches)}\n"
                f"configure {' '.join(CONFIGURE)}\n")

    cached_build(out, build_into, "qemu")
    return binary


def main() -> int:
    jobs = int(os.environ.get("KVMPORT_QEMU_JOBS", "2"))
    try:
        print(build(jobs))
    except LabError as exc:
        print(f"build-qemu: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
