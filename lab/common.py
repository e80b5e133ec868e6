"""Shared helpers for the lab: cache layout, subprocess runs, Debian packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
LAB_BUILD = BUILD / "lab"


class LabError(Exception):
    """A user-facing error: printed as one clear message, no traceback."""


def cache_dir() -> Path:
    """Root of the project cache (~/.cache/kvmport, or $KVMPORT_CACHE)."""
    env = os.environ.get("KVMPORT_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = base if env else base / "kvmport"
    root.mkdir(parents=True, exist_ok=True)
    return root


def log(msg: str) -> None:
    """Progress line for the user (stderr, so stdout stays the guest's)."""
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    capture: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command; raise LabError with its output if it fails."""
    args = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {args[0]}") from exc
    if proc.returncode != 0:
        detail = ""
        if capture:
            detail = "\n" + (proc.stdout or "") + (proc.stderr or "")
        raise LabError(f"command failed ({proc.returncode}): {' '.join(args)}{detail}")
    return proc.stdout if capture else ""


# Tools the labs need, as (command or file that proves it is there, Debian package).
TOOLS_COMMON: list[tuple[str, str]] = [
    ("/usr/bin/cpio", "cpio"),
    ("/usr/bin/busybox", "busybox-static"),
    ("/sbin/depmod", "kmod"),
    ("/usr/bin/zstd", "zstd"),
    ("/usr/bin/make", "make"),
    ("/usr/bin/gcc-12", "gcc-12"),
]
TOOLS_SVM: list[tuple[str, str]] = [("/usr/bin/qemu-system-x86_64", "qemu-system-x86")]
TOOLS_VMX: list[tuple[str, str]] = [
    ("/usr/bin/bochs", "bochs"),
    ("/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so", "bochs-term"),
    ("/usr/share/bochs/BIOS-bochs-latest", "bochsbios"),
    ("/usr/share/vgabios/vgabios.bin", "vgabios"),
    ("/usr/bin/syslinux", "syslinux"),
    ("/usr/lib/syslinux/mbr/mbr.bin", "syslinux-common"),
    ("/usr/bin/mcopy", "mtools"),
    ("/sbin/mkfs.fat", "dosfstools"),
    ("/sbin/mke2fs", "e2fsprogs"),
]


def cached_build(out: Path, build: Callable[[Path], str], what: str) -> None:
    """Make the cache entry out (once): build(work) fills a fresh out.tmp and returns the
    BUILD-INFO lines saying what it was built from; then out.tmp becomes out. An interrupted
    build leaves only out.tmp, which the next call starts again."""
    t0 = time.monotonic()
    work = out.with_name(out.name + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    info = build(work)
    (work / "BUILD-INFO").write_text(f"{info}build seconds {time.monotonic() - t0:.0f}\n")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    log(f"{what}: built in {time.monotonic() - t0:.0f} s")


def ensure_packages(tools: list[tuple[str, str]]) -> None:
    """apt-get install the Debian packages whose marker file is missing."""
    missing = sorted({pkg for path, pkg in tools if not Path(path).exists()})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise LabError(f"missing tools and no apt-get to install them: {' '.join(missing)}")
    if os.geteuid() != 0:
        raise LabError(f"missing packages; as root: apt-get install {' '.join(missing)}")
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=900",
        *missing,
    ]
    try:
        run(cmd, capture=True, env=env)
    except LabError:
        run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=900"], capture=True, env=env)
        run(cmd, capture=True, env=env)
    still = [pkg for path, pkg in tools if not Path(path).exists()]
    if still:
        raise LabError(f"packages installed but files still missing: {still}")


_CANDIDATES: dict[str, str] = {}


def candidate_versions(pkgs: Sequence[str]) -> dict[str, str]:
    """Versions apt would install (one apt-cache call for all, memoised per process)."""
    todo = [p for p in pkgs if p not in _CANDIDATES]
    if todo:
        out = run(["apt-cache", "policy", *todo], capture=True)
        current = None
        for line in out.splitlines():
            if line and not line[0].isspace() and line.rstrip().endswith(":"):
                current = line.rstrip()[:-1]
            elif current and line.strip().startswith("Candidate:"):
                ver = line.split(":", 1)[1].strip()
                if ver and ver != "(none)":
                    _CANDIDATES[current] = ver
    missing = [p for p in pkgs if p not in _CANDIDATES]
    if missing:
        raise LabError(
            f"apt knows no candidate version of {' '.join(missing)} (run apt-get update?)"
        )
    return {p: _CANDIDATES[p] for p in pkgs}


def candidate_version(pkg: str) -> str:
    """Version apt would install for pkg (its candidate)."""
    return candidate_versions([pkg])[pkg]


def fetch_deb(pkg: str) -> Path:
    """Download pkg's .deb (candidate version) into the cache; return its path."""
    ver = candidate_version(pkg)
    debdir = cache_dir() / "debs"
    debdir.mkdir(parents=True, exist_ok=True)
    safe = ver.replace(":", "%3a")
    existing = sorted(debdir.glob(f"{pkg}_{safe}_*.deb"))
    if existing:
        return existing[0]
    log(f"apt-get download {pkg}={ver}")
    run(["apt-get", "download", "-q", f"{pkg}={ver}"], cwd=debdir, capture=True)
    existing = sorted(debdir.glob(f"{pkg}_{safe}_*.deb"))
    if not existing:
        raise LabError(f"apt-get download {pkg}={ver} produced no .deb in {debdir}")
    return existing[0]


def extract_debs(pkgs: Sequence[str], dest: Path) -> Path:
    """Extract the given packages into dest once (marker file keyed by versions)."""
    versions = ",".join(f"{p}={v}" for p, v in candidate_versions(pkgs).items())
    marker = dest / ".extracted"
    if marker.exists() and marker.read_text() == versions:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for pkg in pkgs:
        run(["dpkg-deb", "-x", fetch_deb(pkg), tmp], capture=True)
    (tmp / ".extracted").write_text(versions)
    tmp.rename(dest)
    return dest


def unpack_linux_source(pkg: str, dest: Path, members: Sequence[str] = ()) -> Path:
    """Extract the kernel source tarball of the linux-source-X.Y package pkg (the cached
    .deb) into dest (created, top directory stripped): only the tarball paths matching
    the shell patterns in members (e.g. "tools/*"), or all of it. Returns dest."""
    deb = fetch_deb(pkg)
    log(f"extracting {'part of ' if members else ''}{deb.name}")
    unpacked = dest.with_name(dest.name + ".deb")
    if unpacked.exists():
        shutil.rmtree(unpacked)
    run(["dpkg-deb", "-x", deb, unpacked])
    tarballs = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise LabError(f"no source tarball in {deb}")
    dest.mkdir(parents=True, exist_ok=True)
    wild = ["--wildcards", *[f"*/{m}" for m in members]] if members else []
    run(["tar", "-xf", tarballs[0], "-C", dest, "--strip-components=1", *wild])
    shutil.rmtree(unpacked)
    return dest
