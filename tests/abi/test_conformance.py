"""The ABI in include/ matches Linux's <linux/kvm.h>, checked by the C compiler."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyhost.abi import INCLUDE_DIR, ffi, lib

from .conformance import assertions, source

CC = shutil.which("cc") or shutil.which("gcc")
LINUX_KVM_H = Path("/usr/include/linux/kvm.h")


def compile_c(code: str, tmp_path: Path, include: Path = INCLUDE_DIR,
              extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    assert CC, "no C compiler: apt-get install gcc"
    assert LINUX_KVM_H.exists(), "Linux UAPI headers missing: apt-get install linux-libc-dev"
    src = tmp_path / "check.c"
    src.write_text(code)
    return subprocess.run([CC, "-std=gnu11", "-Wall", "-Werror", f"-I{include}", *extra,
                           "-c", str(src), "-o", str(tmp_path / "check.o")],
                          capture_output=True, text=True)


def test_every_struct_member_and_constant_matches_linux(tmp_path):
    checks = assertions()
    # all of kvm_run's exit union, registers, sregs, msrs, cpuid and the ioctls are in
    assert len(checks) > 300
    for needle in ("CHECK_MEMBER(struct kvmp_run, struct kvm_run, io.data_offset)",
                   "CHECK_MEMBER(struct kvmp_sregs, struct kvm_sregs, interrupt_bitmap)",
                   "CHECK_SIZE(struct kvmp_run, struct kvm_run)",
                   "CHECK_CONST(KVMP_SET_USER_MEMORY_REGION, KVM_SET_USER_MEMORY_REGION)",
                   "CHECK_CONST(KVMP_CAP_IMMEDIATE_EXIT, KVM_CAP_IMMEDIATE_EXIT)"):
        assert needle + ";" in checks
    res = compile_c(source(), tmp_path)
    assert res.returncode == 0, res.stderr


def test_kvm_run_exit_union_is_256_bytes():
    run = ffi.typeof("struct kvmp_run")
    offsets = dict((n, f.offset) for n, f in run.fields)
    assert offsets["kvm_valid_regs"] - offsets["padding"] == 256


@pytest.mark.parametrize("mutation", [
    ("kvmp_u16 selector;", "kvmp_u32 selector;"),      # a member's size
    ("kvmp_u8 if_flag;", "kvmp_u8 if_flag, extra;"),    # offsets after it
    ("KVMP_IOW(KVMPIO, 0x86,", "KVMP_IOR(KVMPIO, 0x86,"),  # an ioctl's direction
])
def test_the_check_fails_on_a_wrong_header(tmp_path, mutation):
    broken = tmp_path / "include" / "kvmport"
    broken.mkdir(parents=True)
    text = (INCLUDE_DIR / "kvmport" / "kvmport.h").read_text()
    assert mutation[0] in text
    (broken / "kvmport.h").write_text(text.replace(mutation[0], mutation[1], 1))
    res = compile_c(source(), tmp_path, include=tmp_path / "include")
    assert res.returncode != 0
    assert "static assertion failed" in res.stderr


# every command of the ABI: a KVMP_ name #defined as KVMP_IO/IOR/IOW/IOWR(...)
_COMMAND = re.compile(r"^#define\s+(KVMP_[A-Z0-9_]+)\s+(?:\\\n\s*)?KVMP_IO(?:R|W|WR)?\(",
                      re.MULTILINE)
KEXT_HEADERS = ("kvmport.h", "kvmport_ext.h", "kvmport_kext.h")


def commands(include: Path = INCLUDE_DIR) -> list[str]:
    return [n for h in KEXT_HEADERS
            for n in _COMMAND.findall((include / "kvmport" / h).read_text())]


def _bsd_void(linux: int) -> int:
    """<sys/ioccom.h>'s _IOC(IOC_VOID, group, num, len), written out from its definition,
    with Linux's group, number and size."""
    group, num, size = linux >> 8 & 0xFF, linux & 0xFF, linux >> 16 & 0x3FFF
    assert size <= 0x1FFF, "IOCPARM_MASK: BSD numbers have 13 bits of size"
    return 0x20000000 | (size & 0x1FFF) << 16 | group << 8 | num


def kext_source(include: Path = INCLUDE_DIR) -> str:
    """Static assertions: each command's kext number is IOC_VOID with Linux's group,
    number and size (taken apart by <linux/ioctl.h>), and its size fits BSD's field."""
    lines = ['#include <linux/ioctl.h>', '#include "kvmport/kvmport_kext.h"',
             "#define BSD_IOC(inout, group, num, len) \\",
             "\t((inout) | (((len) & 0x1fffU) << 16) | ((group) << 8) | (num))"]
    for n in commands(include):
        lines.append(f'_Static_assert(KVMP_KEXT_FITS({n}), "{n} too large for BSD");')
        lines.append(f"_Static_assert(KVMP_KEXT_IOC({n}) == BSD_IOC(0x20000000U, "
                     f'_IOC_TYPE({n}), _IOC_NR({n}), _IOC_SIZE({n})), "{n}");')
    return "\n".join(lines) + "\n"


def test_every_command_has_its_kext_encoding(tmp_path):
    names = commands()
    # the Linux subset, the extension and the kext's own ATTACH are all in
    assert {"KVMP_RUN", "KVMP_GET_MSRS", "KVMP_MMAP_VCPU", "KVMP_KEXT_ATTACH"} <= set(names)
    assert len(names) == len(set(names)) > 30
    res = compile_c(kext_source(), tmp_path)
    assert res.returncode == 0, res.stderr
    # the same header on macOS userspace: same numbers, same envelope
    res = compile_c(kext_source(), tmp_path, extra=("-U__linux__", "-D__APPLE__"))
    assert res.returncode == 0, res.stderr


def test_module_numbers_from_the_bsd_definition(tmp_path):
    """Python's reading of <sys/ioccom.h> against the header, for every command pyhost has."""
    names = [n for n in commands() if hasattr(lib, n)]
    code = '#include "kvmport/kvmport_kext.h"\n' + "".join(
        f'_Static_assert(KVMP_KEXT_IOC({n}) == {_bsd_void(getattr(lib, n)):#x}U, "{n}");\n'
        for n in names)
    res = compile_c(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert _bsd_void(lib.KVMP_GET_REGS) == 0x2090AE81  # Linux's 0x8090ae81, IOC_VOID
    assert _bsd_void(lib.KVMP_RUN) == 0x2000AE80


def test_linux_numbers_are_the_same_on_apple(tmp_path):
    """The core switches on Linux's numbers on every host: __APPLE__ changes none."""
    code = '#include "kvmport/kvmport_kext.h"\n' + "".join(
        f'_Static_assert({n} == {getattr(lib, n):#x}U, "{n}");\n'
        for n in commands() if hasattr(lib, n))
    res = compile_c(code, tmp_path, extra=("-U__linux__", "-D__APPLE__"))
    assert res.returncode == 0, res.stderr


def _kext_headers(tmp_path: Path) -> Path:
    """A copy of the three headers, to break."""
    broken = tmp_path / "include" / "kvmport"
    broken.mkdir(parents=True)
    for h in KEXT_HEADERS:
        shutil.copy(INCLUDE_DIR / "kvmport" / h, broken / h)
    return broken


@pytest.mark.parametrize("mutation", [
    ("| 0xffffU)))", "| 0xffffffffU)))"),   # Linux's direction bits kept
    ("0x20000000U", "0x40000000U"),         # IOC_OUT, not IOC_VOID
])
def test_the_module_check_fails_on_a_wrong_header(tmp_path, mutation):
    broken = _kext_headers(tmp_path)
    text = (broken / "kvmport_kext.h").read_text()
    assert mutation[0] in text
    (broken / "kvmport_kext.h").write_text(text.replace(mutation[0], mutation[1], 1))
    res = compile_c(kext_source(tmp_path / "include"), tmp_path, include=tmp_path / "include")
    assert res.returncode != 0
    assert "static assertion failed" in res.stderr


def test_the_module_check_refuses_a_command_too_large_for_bsd(tmp_path):
    broken = _kext_headers(tmp_path)
    ext = broken / "kvmport_ext.h"
    ext.write_text(ext.read_text().replace(
        "#endif /* KVMPORT_KVMPORT_EXT_H */",
        "struct kvmp_big { char b[8192]; };\n"
        "#define KVMP_BIG KVMP_IOW(KVMPIO_EXT, 0x7f, struct kvmp_big)\n"
        "#endif /* KVMPORT_KVMPORT_EXT_H */"))
    assert "KVMP_BIG" in commands(tmp_path / "include")
    res = compile_c(kext_source(tmp_path / "include"), tmp_path, include=tmp_path / "include")
    assert res.returncode != 0
    assert "KVMP_BIG too large for BSD" in res.stderr


@pytest.mark.parametrize("host", ["linux", "apple"])
def test_module_envelope_layout(tmp_path, host):
    """Fixed offsets, no padding: the kext, lkm and any caller agree on them."""
    layout = {"kvmp_kext_call": {"cmd": 0, "flags": 4, "arg": 8, "result": 16, "": 24},
              "kvmp_kext_attach": {"kind": 0, "flags": 4, "id": 8, "": 16}}
    code = '#include <stddef.h>\n#include "kvmport/kvmport_kext.h"\n'
    for struct, members in layout.items():
        for m, off in members.items():
            expr = f"offsetof(struct {struct}, {m})" if m else f"sizeof(struct {struct})"
            code += f'_Static_assert({expr} == {off}, "{struct} {m}");\n'
    extra = ("-U__linux__", "-D__APPLE__") if host == "apple" else ()
    res = compile_c(code, tmp_path, extra=extra)
    assert res.returncode == 0, res.stderr


def test_extensions_cannot_collide_with_linux():
    assert lib.KVMP_MMAP_VCPU >> 8 & 0xFF != lib.KVMPIO  # not in Linux's ioctl space
    assert lib.KVMP_CAP_MMAP_VCPU > 0x10000000  # far above Linux's capability numbers
