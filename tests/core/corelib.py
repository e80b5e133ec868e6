"""The core's pure-logic files built as a userspace library (cffi), for unit tests.

The declarations come from the core's own headers (preprocessed), as for pyhost's ABI.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from pyhost.abi import INCLUDE_DIR

ROOT = INCLUDE_DIR.parent
CORE = ROOT / "core"
BUILD = ROOT / "build" / "core-user"
# the pure-logic sources and the headers that declare what tests call
SOURCES = ["kvmp_decode.c", "user/kvmp_os_user.c"]
HEADERS = ["kvmp_decode.h"]


def _cdef() -> str:
    """The declarations of HEADERS only (line markers tell which file each line is from)."""
    cc = os.environ.get("CC", "cc")
    text = "".join(f'#include "{h}"\n' for h in HEADERS)
    out = subprocess.run(
        [cc, "-E", "-D__attribute__(x)=", f"-I{INCLUDE_DIR}", f"-I{CORE}", "-x", "c", "-"],
        input=text, capture_output=True, text=True, check=True).stdout
    wanted = {str(CORE / h) for h in HEADERS}
    keep, current = [], ""
    for line in out.splitlines():
        if line.startswith("# "):
            current = line.split('"')[1] if '"' in line else current
            continue
        if str(Path(current).resolve()) in wanted:
            keep.append(line)
    prelude = ("typedef unsigned char u8; typedef unsigned short u16;"
               "typedef unsigned int u32; typedef unsigned long long u64;\n")
    return prelude + "\n".join(keep)


def load() -> Any:
    """Build (once per source hash) and load the library; returns its cffi module."""
    import cffi

    srcs = [CORE / s for s in SOURCES]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in srcs + [CORE / "kvmp_os.h"]
                                     + [CORE / h for h in HEADERS] + [Path(__file__)])).hexdigest()[:16]
    name = f"_kvmp_core_{digest}"
    BUILD.mkdir(parents=True, exist_ok=True)
    for found in BUILD.glob(f"{name}.*.so"):
        return _load(found, name)
    ffi = cffi.FFI()
    ffi.cdef(_cdef())
    ffi.set_source(name, "".join(f'#include "{h}"\n' for h in HEADERS),
                   sources=[str(s) for s in srcs], include_dirs=[str(INCLUDE_DIR), str(CORE)],
                   extra_compile_args=["-Wall", "-Werror", "-std=gnu11"])
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        built = Path(ffi.compile(tmpdir=tmp))
        final = BUILD / built.name
        os.replace(built, final)
    return _load(final, name)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
