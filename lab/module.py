"""Build the Linux driver (lkm/) against a kernel build tree, out of the source tree."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from lab.common import BUILD, REPO, LabError, log, run

LKM = REPO / "lkm"
CORE = REPO / "core"
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


def build_module(kdir: Path, *, src: Path = LKM, quiet: bool = False) -> Path:
    """Build kvmport.ko in src (default lkm/) for the kernel whose build tree is kdir.

    Kbuild builds in the source directory (its products are git-ignored), so
    lkm/'s Kbuild may reach ../include and ../core; the result is copied to
    build/lkm/<release>/kvmport.ko so modules for several kernels coexist.
    """
    if not (kdir / "Makefile").exists():
        raise LabError(f"no kernel build tree at {kdir} (install its headers package)")
    release = kernel_release(kdir)
    out = BUILD / "lkm" / release
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    jobs = str(os.cpu_count() or 1)
    cmd = ["make", "-j", jobs, "-C", str(kdir), f"M={src}", "modules"]
    if not quiet:
        log(" ".join(cmd))
    try:
        run(cmd, capture=quiet)
    except LabError as exc:
        raise LabError(f"building {src.name}/ for {release} failed: {exc}") from None
    ko = src / f"{MODULE}.ko"
    if not ko.exists():
        raise LabError(f"build finished but {ko} is missing")
    final = out / f"{MODULE}.ko"
    shutil.copy2(ko, final)
    if not quiet:
        log(f"built {final} for {release} in {time.monotonic() - t0:.1f} s")
    return final


def host_can_load_modules() -> bool:
    """True on a Linux host where this process may insmod (modules enabled, root)."""
    return Path("/proc/modules").exists() and os.geteuid() == 0


def running_kernel_kdir() -> Path:
    return Path("/lib/modules") / os.uname().release / "build"
