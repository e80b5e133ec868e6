"""Build the macOS kext (kext/ + core/) on Linux: build/kext/kvmport.kext.

`python3 darwin_build.py` (or `invoke build-kext --os darwin`) prints the bundle's path.

Inputs (docs/kext.md): clang-16 and LLVM's tools from Debian; the Kernel.framework headers,
libkmod's two sources, xnu's KPI export lists and the cctools-port tarball from the Darwin
inputs directory, ../shared/darwin beside the checkout unless $KVMPORT_DARWIN names another
one ($KVMPORT_DARWIN_SDK: another include root, e.g. Xcode's Kernel.framework/Headers).
Nothing from there is copied into the repository. Apple's ld64, the one linker that writes
MH_KEXT_BUNDLE files, is built once from the tarball into ~/.cache/kvmport/ld64-<hash>/.

After linking, every symbol the kext imports must be exported by a KPI bundle its
Info.plist names, and each bundle named must supply one; com.apple.kpi.private never.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.common import LabError, cache_dir, cached_build, ensure_packages, log, run

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "build" / "kext"
BUNDLE = OUT / "kvmport.kext"
INFO_PLIST = ROOT / "kext" / "Info.plist"
TARBALL = "cctools-port-986-ld64-711.tar.gz"

CLANG = "clang-16"
CLANGXX = "clang++-16"
NM = "llvm-nm-16"
AR = "llvm-ar-16"
TOOLS: list[tuple[str, str]] = [
    (f"/usr/bin/{CLANG}", "clang-16"),
    (f"/usr/bin/{NM}", "llvm-16"),
    (f"/usr/bin/{AR}", "llvm-16"),
    ("/usr/bin/make", "make"),
]

TARGET = ["-target", "x86_64-apple-macos10.13"]
# A kext's code model: kernel flags, no libc, no red zone (interrupts use the stack)
CFLAGS = [
    *TARGET,
    "-mkernel",
    "-nostdinc",
    "-fno-builtin",
    "-fno-common",
    "-mno-red-zone",
    "-fno-stack-protector",
    "-DKERNEL",
    "-O2",
    "-Wall",
    "-Werror",
    # as Linux's Kbuild: the VMCB is packed and its fields are naturally aligned
    "-Wno-address-of-packed-member",
]
CXXFLAGS = ["-nostdinc++", "-fapple-kext", "-fno-rtti", "-fno-exceptions"]

# KPI bundle -> the export lists (xnu's config/NAME*.exports) that make it on x86_64
KPI_EXPORTS = {
    "com.apple.kpi.bsd": "BSDKernel",
    "com.apple.kpi.iokit": "IOKit",
    "com.apple.kpi.libkern": "Libkern",
    "com.apple.kpi.mach": "Mach",
    "com.apple.kpi.unsupported": "Unsupported",
    "com.apple.kpi.private": "Private",
    "com.apple.kpi.dsep": "MACFramework",
}
FORBIDDEN_KPIS = {"com.apple.kpi.private": "Apple's own kexts only"}

MH_MAGIC_64 = 0xFEEDFACF
CPU_TYPE_X86_64 = 0x01000007
MH_KEXT_BUNDLE = 0xB
LC_DYLD_INFO = 0x22
LC_DYLD_INFO_ONLY = 0x80000022
LC_DYLD_CHAINED_FIXUPS = 0x80000034


@dataclass(frozen=True)
class Inputs:
    """Where the Darwin build inputs are (../shared/darwin's layout)."""

    root: Path
    headers: Path
    kmod: Path
    exports: Path
    tarball: Path

    @classmethod
    def find(cls) -> Inputs:
        root = Path(os.environ.get("KVMPORT_DARWIN", ROOT.parent / "shared" / "darwin"))
        headers = Path(
            os.environ.get("KVMPORT_DARWIN_SDK", root / "MacKernelSDK" / "Headers")
        )
        inputs = cls(
            root=root,
            headers=headers,
            kmod=root / "MacKernelSDK" / "Library" / "kmod",
            exports=root / "xnu-exports" / "config",
            tarball=root / TARBALL,
        )
        missing = [
            str(p)
            for p in (
                inputs.headers / "IOKit" / "IOLib.h",
                inputs.kmod / "c_start.c",
                inputs.kmod / "c_stop.c",
                inputs.exports / "Libkern.exports",
                inputs.tarball,
            )
            if not p.is_file()
        ]
        if missing:
            raise LabError(
                "the Darwin build inputs are missing (set KVMPORT_DARWIN to a directory laid "
                "out as ../shared/darwin, or KVMPORT_DARWIN_SDK for the headers): "
                + ", ".join(missing)
            )
        return inputs


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ld64(inputs: Inputs, jobs: int = 2) -> Path:
    """Apple's ld64, built once from the cctools-port tarball (cached by its hash)."""
    digest = file_hash(inputs.tarball)
    out = cache_dir() / f"ld64-{digest[:16]}"
    binary = out / "ld"
    if binary.is_file():
        return binary
    ensure_packages(TOOLS)

    def build(work: Path) -> str:
        src = work / "src"
        src.mkdir()
        log(f"ld64: unpack {inputs.tarball.name}")
        run(["tar", "xzf", inputs.tarball, "-C", src, "--strip-components=2"], capture=True)
        env = dict(os.environ, CC=CLANG, CXX=CLANGXX)
        log("ld64: configure (once; about 5 minutes in all)")
        run(["./configure", "--target=x86_64-apple-darwin20"], cwd=src, capture=True, env=env)
        for part in ("libstuff", "ld64"):
            log(f"ld64: make -C {part}")
            run(["make", f"-j{jobs}", "-C", part], cwd=src, capture=True, env=env)
        shutil.copy2(src / "ld64" / "src" / "ld" / "ld", work / "ld")
        shutil.rmtree(src)
        return f"source {inputs.tarball.name} sha256 {digest}\n"

    cached_build(out, build, "ld64")
    return binary


def compile_all(inputs: Inputs, obj: Path) -> list[Path]:
    """core/*.c, core/vmx_enter.S, core/svm_enter.S, kext/*.c and kext/*.cpp into obj/."""
    inc: list[str | Path] = ["-I", inputs.headers, "-I", ROOT / "include", "-I", ROOT / "core"]
    objects = []
    sources = [
        *sorted((ROOT / "core").glob("*.c")),
        ROOT / "core" / "vmx_enter.S",
        ROOT / "core" / "svm_enter.S",
        *sorted((ROOT / "kext").glob("*.c")),
        *sorted((ROOT / "kext").glob("*.cpp")),
    ]
    for src in sources:
        o = obj / f"{src.parent.name}_{src.stem}.o"
        cmd: list[str | Path]
        if src.suffix == ".cpp":
            cmd = [CLANGXX, *CFLAGS, *CXXFLAGS, *inc]
        elif src.suffix == ".S":
            cmd = [CLANG, *TARGET, "-DKERNEL", *inc]
        else:
            cmd = [CLANG, *CFLAGS, *inc]
        run([*cmd, "-c", src, "-o", o], capture=True)
        objects.append(o)
    return objects


def libkmod(inputs: Inputs, obj: Path) -> Path:
    """libkmod.a: _start/_stop, which call the kext's _realmain/_antimain."""
    parts = []
    for name in ("c_start", "c_stop"):
        o = obj / f"kmod_{name}.o"
        run(
            [CLANG, *CFLAGS, "-I", inputs.headers, "-c", inputs.kmod / f"{name}.c", "-o", o],
            capture=True,
        )
        parts.append(o)
    lib = obj / "libkmod.a"
    lib.unlink(missing_ok=True)
    run([AR, "rcs", lib, *parts], capture=True)
    return lib


def undefined_symbols(path: Path) -> set[str]:
    out = run([NM, "-u", "-j", path], capture=True)
    return {s for s in out.split() if s and not s.endswith(":")}


def defined_symbols(path: Path) -> set[str]:
    out = run([NM, "-U", "-j", path], capture=True)
    return {s for s in out.split() if s and not s.endswith(":")}


def kpi_exports(exports: Path, bundle: str) -> set[str]:
    """The symbols a KPI bundle exports on x86_64 macOS (its name before any ':alias')."""
    stem = KPI_EXPORTS.get(bundle)
    if stem is None:
        raise LabError(f"Info.plist names {bundle}, which is no KPI bundle this check knows")
    syms: set[str] = set()
    for name in (f"{stem}.exports", f"{stem}.x86_64.exports", f"{stem}.x86_64.MacOSX.exports"):
        f = exports / name
        if f.is_file():
            for line in f.read_text().splitlines():
                sym = line.split(":", 1)[0].strip()
                if sym and not sym.startswith("#"):
                    syms.add(sym)
    return syms


def check_imports(binary: Path, plist: Path, exports: Path) -> dict[str, list[str]]:
    """Every import of binary comes from a bundle plist's OSBundleLibraries names, and
    every bundle named supplies one; raise LabError otherwise. Returns bundle -> symbols."""
    libraries = plistlib.loads(plist.read_bytes()).get("OSBundleLibraries", {})
    errors = [f"{b} is named ({why})" for b, why in FORBIDDEN_KPIS.items() if b in libraries]
    available = {b: kpi_exports(exports, b) for b in libraries}
    used: dict[str, list[str]] = {b: [] for b in libraries}
    for sym in sorted(undefined_symbols(binary)):
        owners = [b for b in libraries if sym in available[b]]
        if not owners:
            where = [b for b in KPI_EXPORTS if sym in kpi_exports(exports, b)]
            hint = f" (exported by {', '.join(where)})" if where else " (exported by no KPI)"
            errors.append(f"{sym} is not exported by a bundle Info.plist names{hint}")
        for b in owners:
            used[b].append(sym)
    errors += [f"{b} is named but supplies nothing" for b, syms in used.items() if not syms]
    if errors:
        raise LabError(f"import check of {binary.name}:\n  " + "\n  ".join(errors))
    return used


def check_macho(binary: Path) -> None:
    """A 64-bit x86_64 MH_KEXT_BUNDLE with classic relocations and _kmod_info defined."""
    data = binary.read_bytes()
    magic, cputype, _sub, filetype, ncmds, _size, _flags = struct.unpack_from("<7I", data)
    if (magic, cputype, filetype) != (MH_MAGIC_64, CPU_TYPE_X86_64, MH_KEXT_BUNDLE):
        raise LabError(
            f"{binary}: magic {magic:#x} cpu {cputype:#x} filetype {filetype:#x}, "
            "not an x86_64 MH_KEXT_BUNDLE"
        )
    off = 32
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from("<2I", data, off)
        if cmd in (LC_DYLD_INFO, LC_DYLD_INFO_ONLY, LC_DYLD_CHAINED_FIXUPS):
            raise LabError(f"{binary}: load command {cmd:#x} (dyld info): the kernel wants "
                           "classic relocations")
        off += cmdsize
    if "_kmod_info" not in defined_symbols(binary):
        raise LabError(f"{binary}: _kmod_info is not defined")


def build(jobs: int = 2) -> Path:
    """Build build/kext/kvmport.kext and check it; return the bundle's path."""
    inputs = Inputs.find()
    ensure_packages(TOOLS)
    linker = ld64(inputs, jobs)
    t0 = time.monotonic()
    obj = OUT / "obj"
    if OUT.exists():
        shutil.rmtree(OUT)
    obj.mkdir(parents=True)
    objects = compile_all(inputs, obj)
    libkmod(inputs, obj)
    macos = BUNDLE / "Contents" / "MacOS"
    macos.mkdir(parents=True)
    binary = macos / "kvmport"
    run(
        [
            linker, "-arch", "x86_64", "-platform_version", "macos", "10.13", "11.0",
            "-kext", "-o", binary, *objects, "-L", obj, "-lkmod",
        ],
        capture=True,
    )
    shutil.copy2(INFO_PLIST, BUNDLE / "Contents" / "Info.plist")
    check_macho(binary)
    used = check_imports(binary, INFO_PLIST, inputs.exports)
    for bundle, syms in used.items():
        log(f"{bundle}: {len(syms)} symbols")
    log(f"kext built and checked in {time.monotonic() - t0:.1f} s")
    return BUNDLE


def main() -> int:
    try:
        print(build(int(os.environ.get("KVMPORT_JOBS", "2"))))
    except LabError as exc:
        print(f"build-kext --os darwin: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
