"""Build small C modules for tests with cffi (API mode), cached by a hash of their inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

# inside the tree (not build/) so the VMX lab, which copies the tree minus build/, has them
BUILD = Path(__file__).resolve().parent / "_cbuild"


def build(stem: str, cdef: str, source: str, *, sources: tuple[Path, ...] = (),
          include_dirs: tuple[Path, ...] = (), extra: tuple[str, ...] = ()) -> ModuleType:
    """Compile (once per content) and import a cffi module; returns it (.ffi, .lib)."""
    import cffi

    h = hashlib.sha256()
    for part in (stem, cdef, source, *map(str, include_dirs), *extra):
        h.update(part.encode())
    for path in sources:
        h.update(path.read_bytes())
    for inc in include_dirs:
        for header in sorted(inc.glob("*.h")):
            h.update(header.read_bytes())
    name = f"_{stem}_{h.hexdigest()[:16]}"
    BUILD.mkdir(parents=True, exist_ok=True)
    found = next(BUILD.glob(f"{name}.*.so"), None)
    if found is None:
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        ffi.set_source(name, source, sources=[str(s) for s in sources],
                       include_dirs=[str(i) for i in include_dirs],
                       extra_compile_args=["-Wall", "-Werror", "-std=gnu11", *extra])
        with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
            built = Path(ffi.compile(tmpdir=tmp))
            found = BUILD / built.name
            os.replace(built, found)
    spec = importlib.util.spec_from_file_location(name, found)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
