"""`python -m pyhost boot` with bad input: one line on stderr, exit 1, never a traceback,
and no device needed to say so (the image and kernel are checked before the device is
opened); and interrupted mid-boot, a report of where the guest was."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyhost.boot.fat import FatImage
from pyhost.boot.fatbuild import build_fat_image

ROOT = Path(__file__).resolve().parents[2]
BOOTFD = ROOT / "bintest" / "bootfd.img"


def run(*argv: str, device: str = "/dev/nonexistent-kvm") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyhost", "--device", device, "boot", *argv],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def bootfd_files() -> dict[str, bytes]:
    fs = FatImage(BOOTFD.read_bytes())
    return {p: fs.read_file(p) for p in ("/vmlinuz", "/initrd.gz", "/syslinux.cfg")}


def make_inputs(tmp: Path, files: dict[str, bytes]) -> dict[str, Path]:
    img = BOOTFD.read_bytes()
    old = bytearray(files["/vmlinuz"])
    old[0x206:0x208] = struct.pack("<H", 0x0201)
    paths = {
        "truncated": img[:20000],
        "corrupt": bytes(range(256)) * 64,
        "empty": b"",
        "noconfig": build_fat_image({"/vmlinuz": files["/vmlinuz"]}),
        "missing-kernel": build_fat_image({"/syslinux.cfg": b"DEFAULT a\nLABEL a\n"
                                           b"  KERNEL /nothere\n"}),
        "oldkernel": bytes(old),
        "notkernel": b"\x7fELF" + bytes(8192),
        "truncated-kernel": files["/vmlinuz"][:4096],
    }
    out = {}
    for name, data in paths.items():
        p = tmp / name
        p.write_bytes(data)
        out[name] = p
    return out


CASES = [
    (["IMG:truncated"], "truncated"),
    (["IMG:corrupt"], "not a FAT volume"),
    (["IMG:empty"], "FAT image too small"),
    (["IMG:noconfig"], "no boot loader config"),
    (["IMG:missing-kernel"], "not on the image"),
    (["--kernel", "IMG:oldkernel"], "too old"),
    (["--kernel", "IMG:notkernel"], "not a bzImage"),
    (["--kernel", "IMG:truncated-kernel"], "truncated bzImage"),
    (["/nonexistent.img"], "cannot read image /nonexistent.img"),
    ([], "nothing to boot"),
    (["BOOTFD", "-m", "8M"], "too little memory"),
    (["BOOTFD", "-m", "1M"], "too little memory"),
    (["BOOTFD", "--label", "nosuchlabel"], "nosuchlabel"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_one_line_exit_1(tmp_path, bootfd_files, argv, message):
    inputs = make_inputs(tmp_path, bootfd_files)
    args = [str(inputs[a[4:]]) if a.startswith("IMG:") else str(BOOTFD) if a == "BOOTFD"
            else a for a in argv]
    res = run(*args)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyhost: error: "), res.stderr
    assert message in lines[0]


def test_good_image_fails_only_on_the_missing_device():
    res = run(str(BOOTFD))
    assert res.returncode == 1
    assert "tried /dev/nonexistent-kvm" in res.stderr and "Traceback" not in res.stderr


def test_boot_help_lists_the_options():
    res = subprocess.run([sys.executable, "-m", "pyhost", "boot", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0
    for opt in ("--mem", "--append", "--kernel", "--initrd", "--device", "IMAGE"):
        assert opt in res.stdout


def test_sigint_mid_boot_reports_registers_pics_and_exits(device):
    """A hung guest must say where it hangs: SIGINT ends the boot with status 130 and
    prints the VCPU's registers, both 8259s' state and the exit counts."""
    proc = subprocess.Popen([sys.executable, "-m", "pyhost", "boot", str(BOOTFD), "--device",
                             device, "--no-tsc-khz", "-v"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # printed just before the guest starts
        assert first.startswith("pyhost: booting"), first
        time.sleep(1.0)  # into the run loop: a kernel boot takes far longer than this
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "pyhost: interrupted" in err, err
    assert "registers: rip=0x" in err and " cr3=0x" in err, err
    assert "pic-master irr=" in err and "pic-slave irr=" in err, err
    assert " exits (" in err and "Traceback" not in err, err
