"""Build the Linux driver (lkm/) against a kernel build tree, out of the source tree."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from lab.common import BUILD, REPO, LabError, log, run

LKM = REPO / "lkm"
MODULE = "kvmport"


def kernel_release(kdir: Path) -> str:
    """UTS_RELEASE of a build tree (what the module's vermagic will say)."""
    uts = kdir / "include" / "generated" / "utsrelease.h"
    if uts.exists():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        if m:
            return m.group(1)
    kv = kdir / ".kernelvariables"
    if kv.exists():
        for line in kv.read_text().splitlines():
            if "KERNELRELEASE" in line and "=" in line:
                return line.split("=", 1)[1].strip()
    raise LabError(f"{kdir} is not a kernel build tree (no include/generated/utsrelease.h)")


def build_kext(kdir: Path, *, quiet: bool = False) -> Path:
    """Build kvmport.ko for the kernel whose build tree is kdir; return the .ko path.

    The sources are copied to build/lkm/<release>/lkm (next to a link to include/)
    so that several kernels can be built side by side and the tree stays clean.
    """
    if not (kdir / "Makefile").exists():
        raise LabError(f"no kernel build tree at {kdir} (install its headers package)")
    release = kernel_release(kdir)
    out = BUILD / "lkm" / release
    src = out / "lkm"
    out.mkdir(parents=True, exist_ok=True)
    inc = out / "include"
    if inc.is_symlink() or inc.exists():
        inc.unlink()
    inc.symlink_to(REPO / "include")
    # Sync sources: copy every file tracked in lkm/ (not build products).
    src.mkdir(exist_ok=True)
    wanted = {p.name for p in LKM.iterdir() if p.is_file() and _is_source(p)}
    for p in src.iterdir():
        if p.is_file() and _is_source(p) and p.name not in wanted:
            p.unlink()
    for name in wanted:
        s, d = LKM / name, src / name
        if not d.exists() or d.read_bytes() != s.read_bytes():
            shutil.copy2(s, d)
    t0 = time.monotonic()
    jobs = str(os.cpu_count() or 1)
    cmd = ["make", "-j", jobs, "-C", str(kdir), f"M={src}", "modules"]
    if not quiet:
        log(" ".join(cmd))
    run(cmd, capture=quiet)
    ko = src / f"{MODULE}.ko"
    if not ko.exists():
        raise LabError(f"build finished but {ko} is missing")
    final = out / f"{MODULE}.ko"
    shutil.copy2(ko, final)
    if not quiet:
        log(f"built {final} for {release} in {time.monotonic() - t0:.1f} s")
    return final


def _is_source(p: Path) -> bool:
    return p.name in ("Kbuild", "Makefile") or p.suffix in (".c", ".h", ".rules", ".S")


def host_can_load_modules() -> bool:
    """True on a Linux host where this process may insmod (modules enabled, root)."""
    return Path("/proc/modules").exists() and os.geteuid() == 0


def running_kernel_kdir() -> Path:
    return Path("/lib/modules") / os.uname().release / "build"
