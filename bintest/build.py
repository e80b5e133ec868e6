"""Build the micro-guests in bintest/guests/ into raw binaries (bintest/out/NAME.bin).

Each guest's source names its CPU mode on its first line (`pyhost-mode: real`).
All are linked to run at pyhost.x86.modes.LOAD_ADDRESS; the ELF is kept beside
the binary so tests can look up symbols (for example where a guest stops).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent / "guests"
OUT_DIR = Path(__file__).resolve().parent / "out"
LOAD_ADDRESS = 0x8000  # pyhost.x86.modes.LOAD_ADDRESS; a test checks they agree

_MODE = re.compile(r"pyhost-mode:\s*(real|protected|long)")
_TOOLS = ("as", "ld", "objcopy", "nm")


class BuildError(RuntimeError):
    pass


def sources() -> list[Path]:
    return sorted(GUESTS_DIR.glob("*.S"))


def mode_of(name: str) -> str:
    m = _MODE.search((GUESTS_DIR / f"{name}.S").read_text())
    if not m:
        raise BuildError(f"{name}.S does not say its mode (pyhost-mode: real|protected|long)")
    return m.group(1)


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{res.stderr}")


def build(name: str, out_dir: Path = OUT_DIR) -> Path:
    """Assemble and link one guest if its binary is missing or older than its source."""
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        raise BuildError(f"GNU binutils missing ({', '.join(missing)}): apt-get install binutils")
    src = GUESTS_DIR / f"{name}.S"
    out_dir.mkdir(parents=True, exist_ok=True)
    obj, elf, binary = (out_dir / f"{name}{ext}" for ext in (".o", ".elf", ".bin"))
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    bits64 = mode_of(name) == "long"
    _run(["as", "--64" if bits64 else "--32", "-o", str(obj), str(src)])
    _run(["ld", "-m", "elf_x86_64" if bits64 else "elf_i386", "-nostdlib", "-e", "_start",
          f"-Ttext=0x{LOAD_ADDRESS:x}", "-o", str(elf), str(obj)])
    _run(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binary)])
    return binary


def build_all(out_dir: Path = OUT_DIR) -> list[Path]:
    return [build(src.stem, out_dir) for src in sources()]


def symbols(name: str, out_dir: Path = OUT_DIR) -> dict[str, int]:
    """The guest's symbols and their guest addresses (from its ELF)."""
    build(name, out_dir)
    res = subprocess.run(["nm", str(out_dir / f"{name}.elf")], capture_output=True, text=True,
                         check=True)
    table = {}
    for line in res.stdout.splitlines():
        addr, _kind, sym = line.split()
        table[sym] = int(addr, 16)
    return table


if __name__ == "__main__":
    for path in build_all():
        print(path)
