"""The ABI in include/ matches Linux's <linux/kvm.h>, checked by the C compiler."""

from __future__ import annotations

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


def _bsd_ioc(direction: int, nr: int, size: int) -> int:
    """Darwin's <sys/ioccom.h> encoding, written out from its definition."""
    bits = 0x20000000 if direction == 0 else 0
    if direction & 2:   # Linux READ: the kernel copies out
        bits |= 0x40000000
    if direction & 1:   # Linux WRITE: the kernel copies in
        bits |= 0x80000000
    return bits | ((size & 0x1FFF) << 16) | (0xAE << 8) | nr


def test_darwin_build_uses_bsd_ioctl_encoding(tmp_path):
    names = {"KVMP_RUN": (0, 0x80, 0), "KVMP_GET_REGS": (2, 0x81, ffi.sizeof("struct kvmp_regs")),
             "KVMP_SET_REGS": (1, 0x82, ffi.sizeof("struct kvmp_regs")),
             "KVMP_GET_MSRS": (3, 0x88, ffi.sizeof("struct kvmp_msrs"))}
    code = '#include "kvmport/kvmport_ext.h"\n' + "".join(
        f"_Static_assert({n} == {_bsd_ioc(*v):#x}U, \"{n}\");\n" for n, v in names.items())
    res = compile_c(code, tmp_path, extra=("-U__linux__", "-D__APPLE__"))
    assert res.returncode == 0, res.stderr
    # and on Linux the same names carry Linux's numbers
    assert lib.KVMP_RUN == 0xAE80 and lib.KVMP_GET_REGS == 0x8090AE81


def test_extensions_cannot_collide_with_linux():
    assert lib.KVMP_MMAP_VCPU >> 8 & 0xFF != lib.KVMPIO  # not in Linux's ioctl space
    assert lib.KVMP_CAP_MMAP_VCPU > 0x10000000  # far above Linux's capability numbers
