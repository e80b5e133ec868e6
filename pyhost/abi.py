"""The kvmport ABI, bound from include/ by cffi.

Nothing here restates a struct layout or an ioctl number: the declarations cffi
sees are the C preprocessor's output of include/kvmport/*.h (built with
KVMP_CDEF), and every KVMP_* constant is declared by name only (`#define NAME
...`), so its value comes from compiling the header.  cffi's API mode also
checks each struct layout against the C compiler when the module is built.

The compiled module is cached next to this file (or under ~/.cache/kvmport when
that is read-only), keyed by a hash of the headers, this builder and the Python version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
HEADERS = ("kvmport/kvmport.h", "kvmport/kvmport_ext.h", "kvmport/kvmport_kext.h")
_BUILD_DIRS = (
    Path(__file__).resolve().parent / "_abi_build",
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvmport" / "abi",
)

_PRELUDE = """
typedef unsigned char kvmp_u8;
typedef unsigned short kvmp_u16;
typedef unsigned int kvmp_u32;
typedef unsigned long long kvmp_u64;
int kvmp_ioctl_ptr(int fd, unsigned long request, void *arg);
int kvmp_ioctl_int(int fd, unsigned long request, unsigned long arg);
int kvmp_install_kick_handler(int sig);
unsigned int kvmp_kext_ioc(unsigned int cmd);
int munmap(void *addr, size_t length);
"""

# Wrappers return -errno so that errno never has to cross threads or the GIL.
_SOURCE = """
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include "kvmport/kvmport_kext.h"

static int kvmp_ioctl_ptr(int fd, unsigned long request, void *arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

/* the kext ABI's number of a command (a function-like macro: cffi cannot bind it) */
static unsigned int kvmp_kext_ioc(unsigned int cmd)
{
    return KVMP_KEXT_IOC(cmd);
}

static int kvmp_ioctl_int(int fd, unsigned long request, unsigned long arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

/*
 * A kick is a signal whose only job is to make a blocked KVM_RUN return
 * -EINTR.  A C handler (not Python's) works on every thread, and no
 * SA_RESTART so the ioctl is not restarted.
 */
static void kvmp_kick_handler(int sig)
{
    (void)sig;
}

static int kvmp_install_kick_handler(int sig)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kvmp_kick_handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL) < 0 ? -errno : 0;
}
"""

# object-like macros only: a name followed by '(' is a function-like macro
_MACRO = re.compile(r"^#define\s+(KVMP[A-Z0-9_]*)(?=[ \t])", re.MULTILINE)


class AbiBuildError(RuntimeError):
    """The ABI bindings could not be built (no C compiler, bad header)."""


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise AbiBuildError(
            f"no C compiler ({cc!r}) to build the ABI bindings from include/: "
            "install gcc (apt-get install gcc)"
        )
    return cc


def macro_names() -> list[str]:
    """Every object-like KVMP_* macro the ABI headers define, in order."""
    names: list[str] = []
    for header in HEADERS:
        for name in _MACRO.findall((INCLUDE_DIR / header).read_text()):
            if name not in names:
                names.append(name)
    return names


def cdef_source() -> str:
    """The declarations handed to cffi: preprocessed structs plus macro names."""
    cmd = [_compiler(), "-E", "-P", "-DKVMP_CDEF", f"-I{INCLUDE_DIR}", "-x", "c",
           str(INCLUDE_DIR / HEADERS[-1])]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise AbiBuildError(f"preprocessing the ABI header failed:\n{out.stderr}")
    # drop IOC helper macros: only integers are meaningful as cffi constants
    defines = "".join(f"#define {n} ...\n" for n in macro_names())
    return _PRELUDE + out.stdout + defines


def _digest() -> str:
    """What the built module depends on: the headers, this builder, the Python.  No
    compiler run is needed to find a module already built (it matters in slow labs)."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for header in HEADERS:
        h.update((INCLUDE_DIR / header).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AbiBuildError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(cdef: str, name: str, build_dir: Path) -> Path:
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source(name, _SOURCE, include_dirs=[str(INCLUDE_DIR)])
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        built = Path(ffi.compile(tmpdir=tmp, verbose=False))
        final = build_dir / built.name
        os.replace(built, final)  # atomic: concurrent builders never see half a file
    return final


def _find_or_build() -> ModuleType:
    name = f"_kvmport_abi_{_digest()}"
    for d in _BUILD_DIRS:
        for candidate in d.glob(f"{name}.*.so"):
            return _load(candidate, name)
    cdef = cdef_source()
    errors = []
    for d in _BUILD_DIRS:
        try:
            return _load(_build(cdef, name, d), name)
        except OSError as e:  # read-only checkout: try the next place
            errors.append(f"{d}: {e}")
    raise AbiBuildError("cannot build the ABI bindings: " + "; ".join(errors))


_module = _find_or_build()
ffi: Any = _module.ffi
lib: Any = _module.lib


def constants(prefix: str) -> dict[str, int]:
    """KVMP_<prefix>* constants as {name without KVMP_: value}."""
    full = "KVMP_" + prefix
    return {n[5:]: getattr(lib, n) for n in macro_names() if n.startswith(full)}
