"""qemu-patches/0003 (QEMU's kext-ABI transport) writes the kext ABI's numbers and layouts
out in accel/kvm/kvm-kext.c, so QEMU builds without our tree: the C compiler checks them
against include/kvmport/kvmport_kext.h."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhost.abi import INCLUDE_DIR

from .test_conformance import commands, compile_c

PATCH = Path(__file__).resolve().parents[2] / "qemu-patches" / "0003-accel-kvm-kext-abi.patch"
KEXT_C = "accel/kvm/kvm-kext.c"
# the patch's names for the header's structures, member by member
STRUCTS = {
    ("struct kvm_kext_call", "struct kvmp_kext_call"): ("cmd", "flags", "arg", "result"),
    ("struct kvm_kext_attach", "struct kvmp_kext_attach"): ("kind", "flags", "id"),
    ("struct kvm_kext_mmap_vcpu", "struct kvmp_mmap_vcpu"): ("addr", "size", "flags"),
}
CONSTANTS = [("KEXT_ATTACH", "KVMP_KEXT_ATTACH"), ("KEXT_MMAP_VCPU", "KVMP_MMAP_VCPU"),
             ("KEXT_ATTACH_VM", "KVMP_KEXT_ATTACH_VM"),
             ("KEXT_ATTACH_VCPU", "KVMP_KEXT_ATTACH_VCPU")]


def definitions() -> str:
    """The definitions the patch's kvm-kext.c adds: from its first #define to its build
    assertions."""
    text = PATCH.read_text()
    start = text.index(f"+++ b/{KEXT_C}\n")
    end = text.find("\ndiff ", start)
    added = [line[1:] for line in text[start:end if end > 0 else None].splitlines()[1:]
             if line.startswith("+")]
    first = next(i for i, line in enumerate(added) if line.startswith("#define"))
    last = next(i for i, line in enumerate(added) if line.startswith("QEMU_BUILD_BUG_ON"))
    return "\n".join(added[first:last]) + "\n"


def source(defs: str) -> str:
    lines = ["#include <stddef.h>", "#include <stdint.h>", "#include <sys/ioctl.h>",
             '#include "kvmport/kvmport_kext.h"', defs]
    for n in commands():
        lines.append(f'_Static_assert(KEXT_IOC({n}) == KVMP_KEXT_IOC({n}), "{n}");')
    for ours, theirs in CONSTANTS:
        lines.append(f'_Static_assert({ours} == {theirs}, "{ours}");')
    for (ours, theirs), members in STRUCTS.items():
        lines.append(f'_Static_assert(sizeof({ours}) == sizeof({theirs}), "{ours}");')
        for m in members:
            lines.append(f"_Static_assert(offsetof({ours}, {m}) == offsetof({theirs}, {m}) "
                         f"&& sizeof((({ours} *)0)->{m}) == sizeof((({theirs} *)0)->{m}), "
                         f'"{ours}.{m}");')
    return "\n".join(lines) + "\n"


def test_the_patch_has_the_headers_numbers_and_layouts(tmp_path):
    defs = definitions()
    for name, _ in CONSTANTS:
        assert f"#define {name} " in defs
    res = compile_c(source(defs), tmp_path, include=INCLUDE_DIR)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("mutation", [
    ("0x20000000U", "0x40000000U"),    # IOC_VOID
    ("KEXT_EXT_IO             0xB7", "KEXT_EXT_IO             0xB8"),  # the type byte
    ("    uint64_t result;", "    uint32_t result;"),  # the envelope's layout
])
def test_the_check_fails_on_a_wrong_number(tmp_path, mutation):
    defs = definitions()
    assert mutation[0] in defs
    res = compile_c(source(defs.replace(mutation[0], mutation[1], 1)), tmp_path)
    assert res.returncode != 0
    assert "static assertion failed" in res.stderr
