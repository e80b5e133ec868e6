"""The lab kernel: Debian's generic amd64 kernel, its modules and headers, from the cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.common import (
    TOOLS_COMMON,
    LabError,
    cache_dir,
    candidate_versions,
    ensure_packages,
    extract_debs,
    run,
)

META_PACKAGE = "linux-image-amd64"


def resolve_abi(meta: str = META_PACKAGE) -> str:
    """The kernel ABI name (e.g. 6.1.0-56-amd64) the meta package currently depends on."""
    out = run(["apt-cache", "depends", meta], capture=True)
    for m in re.finditer(r"Depends:\s*linux-image-(\S+)", out):
        abi = m.group(1)
        if not abi.endswith("-unsigned") and abi != meta:
            return abi
    raise LabError(f"cannot resolve the kernel ABI from `apt-cache depends {meta}`:\n{out}")


def _header_packages(abi: str) -> list[str]:
    """linux-headers-<abi> and the -common/kbuild packages it depends on (cached)."""
    memo = cache_dir() / "kernel" / f"headers-packages-{abi}.txt"
    if memo.exists():
        return memo.read_text().split()
    pkg = f"linux-headers-{abi}"
    out = run(["apt-cache", "depends", pkg], capture=True)
    deps = re.findall(r"^\s*Depends:\s*(\S+)", out, re.M)
    pkgs = [pkg] + [d for d in deps if d.startswith(("linux-headers-", "linux-kbuild-"))]
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text("\n".join(pkgs) + "\n")
    return pkgs


@dataclass(frozen=True)
class LabKernel:
    abi: str
    version: str  # Debian package version, e.g. 6.1.192-2
    root: Path  # extracted linux-image package (boot/, lib/modules/)
    headers_root: Path  # extracted linux-headers packages
    kdir: Path | None = None  # a kernel's own build tree (the debug kernel), else headers_root's
    # boot through virtme-ng's initramfs: 6.1 mounts a 9p root by itself only with
    # CONFIG_BLOCK (mount_root), which the debug kernel leaves out
    initramfs: bool = False

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.abi}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.abi

    @property
    def headers(self) -> Path:
        """The kbuild directory to pass as KDIR."""
        if self.kdir is not None:
            return self.kdir
        return self.headers_root / "usr" / "src" / f"linux-headers-{self.abi}"

    def module_path(self, name: str) -> Path:
        """Path of a kernel module (name as modprobe spells it) in the lab kernel."""
        dep = (self.modules / "modules.dep").read_text()
        want = {name.replace("-", "_")}
        for line in dep.splitlines():
            rel = line.split(":", 1)[0]
            base = Path(rel).name.split(".ko")[0].replace("-", "_")
            if base in want:
                return self.modules / rel
        raise LabError(f"module {name} not found in {self.modules}")

    def module_deps(self, name: str) -> list[Path]:
        """Module and its dependencies, dependencies first (from modules.dep)."""
        dep = (self.modules / "modules.dep").read_text()
        table: dict[str, list[str]] = {}
        for line in dep.splitlines():
            rel, _, rest = line.partition(":")
            table[rel] = rest.split()
        target = str(self.module_path(name).relative_to(self.modules))
        order: list[str] = []

        def visit(rel: str) -> None:
            for d in table.get(rel, []):
                visit(d)
            if rel not in order:
                order.append(rel)

        visit(target)
        return [self.modules / r for r in order]


DEBUG = "debug"  # --kernel debug: lab/debugkernel's KASAN/KFENCE/lockdep/kmemleak kernel


def debug_lab_kernel() -> LabKernel:
    """The debug kernel, built from linux-source once (cached; lab/debugkernel/build.py)."""
    from lab.debugkernel.build import build, release

    ensure_packages(TOOLS_COMMON)
    out = build()
    return LabKernel(abi=release(out), version=(out / "BUILD-INFO").read_text().split()[2],
                     root=out / "root", headers_root=out, kdir=out / "obj", initramfs=True)


def lab_kernel(abi: str | None = None) -> LabKernel:
    """Download and extract (once, cached by version) the lab kernel and its headers;
    abi "debug" is the debug kernel, built once from Debian's sources."""
    if abi == DEBUG:
        return debug_lab_kernel()
    ensure_packages(TOOLS_COMMON)  # depmod (kmod) and the module build tools come first
    abi = abi or resolve_abi()
    image_pkg = f"linux-image-{abi}"
    hdr_pkgs = _header_packages(abi)
    version = candidate_versions([image_pkg, *hdr_pkgs])[image_pkg]
    base = cache_dir() / "kernel" / f"{abi}_{version}"
    root = extract_debs([image_pkg], base / "image")
    mods = root / "lib" / "modules" / abi
    if not (mods / "modules.dep").exists() or (mods / "modules.dep").stat().st_size == 0:
        run(["depmod", "-b", root, abi], capture=True)
    headers_root = extract_debs(hdr_pkgs, base / "headers")
    k = LabKernel(abi=abi, version=version, root=root, headers_root=headers_root)
    fixed = headers_root / ".links-fixed"
    if not fixed.exists():
        _fix_header_links(k)
        fixed.touch()
    if not k.vmlinuz.exists():
        raise LabError(f"{k.vmlinuz} missing after extracting {image_pkg}")
    return k


def _fix_header_links(k: LabKernel) -> None:
    """Debian's headers use absolute symlinks (/usr/lib/linux-kbuild-*); point them in-tree."""
    for link in [*k.headers.rglob("*")]:
        if link.is_symlink():
            target = Path(link.readlink())
            if target.is_absolute():
                inside = k.headers_root / target.relative_to("/")
                link.unlink()
                link.symlink_to(inside)
    mk = k.headers / "Makefile"
    text = mk.read_text()
    fixed = re.sub(r"^include /usr/", f"include {k.headers_root}/usr/", text, flags=re.M)
    if fixed != text:
        mk.write_text(fixed)
