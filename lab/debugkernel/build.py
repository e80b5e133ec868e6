"""Build the debug lab kernel (`invoke lab --kernel debug`) from Debian's linux-source, cached.

Debian's linux-source-6.1 tarball, configured as tinyconfig + kvmport_debug.config (KASAN,
KFENCE, lockdep, DEBUG_ATOMIC_SLEEP, kmemleak; kvm, kvm_amd, kvm_intel as modules; what
virtme-ng needs to boot it), built with `nice -n 19 make -j2` (the machine is shared). The
cache entry ~/.cache/kvmport/debug-kernel-<package>_<version>-<hash>/ (hash over the
fragment and this file) holds root/boot/vmlinuz-<release> and root/lib/modules/<release>/
(the layout virtme-ng and LabKernel expect), the kbuild tree kvmport.ko is built against
(obj/ with its objects deleted, src/ the sources it includes), BUILD-INFO and make.log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from lab.checkpatch import source_package
from lab.common import (
    LabError,
    cache_dir,
    cached_build,
    candidate_version,
    ensure_packages,
    log,
    run,
    unpack_linux_source,
)

HERE = Path(__file__).resolve().parent
FRAGMENT = HERE / "kvmport_debug.config"
# the kernel build's own tools: Kconfig's parser, objtool (libelf), sign-file (openssl)
TOOLS_KERNEL: list[tuple[str, str]] = [
    ("/usr/bin/flex", "flex"),
    ("/usr/bin/bison", "bison"),
    ("/usr/bin/bc", "bc"),
    ("/usr/include/gelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    ("/usr/bin/make", "make"),
    ("/usr/bin/gcc-12", "gcc-12"),
    ("/sbin/depmod", "kmod"),
]


def key_hash() -> str:
    """Short hash over the config fragment and this build script."""
    h = hashlib.sha256()
    for p in (FRAGMENT, Path(__file__)):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def entry() -> Path:
    """The cache entry for the current linux-source version, fragment and script."""
    pkg = source_package()
    version = candidate_version(pkg)
    return cache_dir() / f"debug-kernel-{pkg}_{version.replace(':', '_')}-{key_hash()}"


def release(out: Path) -> str:
    """The kernel release (uname -r) of a built entry."""
    return (out / "RELEASE").read_text().strip()


def build(jobs: int = 2) -> Path:
    """Build (once) and return the cache entry."""
    out = entry()
    if (out / "RELEASE").is_file():
        return out
    ensure_packages(TOOLS_KERNEL)
    pkg = source_package()
    version = candidate_version(pkg)

    def build_into(work: Path) -> str:
        src = unpack_linux_source(pkg, work / "src")
        obj = work / "obj"
        obj.mkdir()
        shutil.copy(FRAGMENT, src / "kernel" / "configs" / FRAGMENT.name)
        make = ["make", "-C", str(src), f"O={obj}", "ARCH=x86_64"]
        run([*make, "-s", "tinyconfig", FRAGMENT.name], capture=True)
        # every line of the fragment must have survived olddefconfig (a dependency not
        # met drops an option silently)
        config = set((obj / ".config").read_text().splitlines())
        lost = [ln for ln in FRAGMENT.read_text().splitlines()
                if ln.startswith(("CONFIG_", "# CONFIG_")) and ln not in config]
        if lost:
            raise LabError(f"{FRAGMENT.name}: not in the resulting .config: {lost}")
        log(f"building the debug kernel: nice -n 19 make -j{jobs} bzImage modules "
            f"(log: {work / 'make.log'})")
        t0 = time.monotonic()
        with (work / "make.log").open("w") as f:
            proc = subprocess.run(["nice", "-n", "19", *make, f"-j{jobs}", "bzImage", "modules"],
                                  stdout=f, stderr=subprocess.STDOUT, check=False)
        make_s = time.monotonic() - t0
        if proc.returncode:
            tail = (work / "make.log").read_text().splitlines()[-30:]
            raise LabError("building the debug kernel failed:\n" + "\n".join(tail))
        rel = (obj / "include" / "config" / "kernel.release").read_text().strip()
        root = work / "root"
        run([*make, "-s", f"INSTALL_MOD_PATH={root}", "modules_install"], capture=True)
        for link in ("build", "source"):  # absolute paths into work/: not needed
            (root / "lib" / "modules" / rel / link).unlink(missing_ok=True)
        run(["depmod", "-b", root, rel], capture=True)
        (root / "boot").mkdir()
        shutil.copy2(obj / "arch" / "x86" / "boot" / "bzImage", root / "boot" / f"vmlinuz-{rel}")
        # obj/ stays the kbuild tree for external modules (M=): it must survive the
        # rename of work/, so its pointers to src/ become relative; the objects go
        (obj / "Makefile").write_text("include ../src/Makefile\n")
        (obj / "source").unlink(missing_ok=True)
        (obj / "source").symlink_to("../src")
        for dirpath, _, files in os.walk(obj):
            for name in files:
                if name.endswith((".o", ".a")) or name in ("vmlinux", "vmlinux.o"):
                    (Path(dirpath) / name).unlink()
        (work / "RELEASE").write_text(rel + "\n")
        return (f"source {pkg} {version}\nfragment {FRAGMENT.name}\nrelease {rel}\n"
                f"make -j{jobs} bzImage modules: {make_s:.0f} s (nice -n 19)\n")

    cached_build(out, build_into, "debug kernel")
    return out
