"""The core's pure-logic files built as a userspace library (cffi), for unit tests.

The declarations come from the core's own headers (preprocessed), as for pyhost's ABI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from bintest.cbuild import build
from pyhost.abi import INCLUDE_DIR

CORE = INCLUDE_DIR.parent / "core"
# the pure-logic sources and the headers that declare what tests call
SOURCES = ["kvmp_check.c", "kvmp_decode.c", "kvmp_main.c", "kvmp_mem.c", "kvmp_x86.c", "kvmp_fpu.c",
           "kvmp_state.c", "kvmp_tdp.c", "kvmp_kext.c", "user/kvmp_os_user.c",
           "user/kvmp_user_backend.c"]
HEADERS = ["kvmp_decode.h", "kvmp_port.h", "kvmp_core.h", "user/kvmp_user.h"]


def _cdef() -> str:
    """The declarations of HEADERS only (line markers tell which file each line is from)."""
    cc = os.environ.get("CC", "cc")
    text = "".join(f'#include "{h}"\n' for h in HEADERS)
    out = subprocess.run(
        [cc, "-E", "-DKVMP_CDEF", "-D__attribute__(x)=", f"-I{INCLUDE_DIR}", f"-I{CORE}", "-x",
         "c", "-"],
        input=text, capture_output=True, text=True, check=True).stdout
    wanted = {str((CORE / h).resolve()) for h in HEADERS}
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
    """Build (once per content) and load the library; returns its cffi module."""
    return build("kvmp_core", _cdef(), "".join(f'#include "{h}"\n' for h in HEADERS),
                 sources=tuple(CORE / s for s in SOURCES), include_dirs=(INCLUDE_DIR, CORE))
