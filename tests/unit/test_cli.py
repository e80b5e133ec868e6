"""The command line, run in-process against each device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bintest.build import build
from pyhost.cli import main, parse_size
from pyhost.status import EXIT_GUEST_FAULT, EXIT_OK


def test_parse_size():
    assert parse_size("2M") == 2 << 20
    assert parse_size("512k") == 512 << 10
    assert parse_size("0x1000") == 4096
    with pytest.raises(Exception, match="not a size"):
        parse_size("lots")


def test_info_lists_capabilities(device, capsys):
    assert main(["--device", device, "info"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"device        {device}" in out and "api version   12" in out
    assert "IMMEDIATE_EXIT" in out and "USER_MEMORY" in out
    assert "\nbackend       " in out
    assert f"abi           {'kext' if device.endswith('/kvmport-kext') else 'linux'}\n" in out
    if device == "/dev/kvm" and os.path.isdir("/sys/module/kvm_pvm"):
        assert "backend       kvm_pvm (emulated: " in out  # this build machine's device


def test_run_raw_demo0_prints_the_registers_at_the_stop(device, capsys):
    status = main(["--device", device, "run-raw", str(build("demo0_add")), "--mode", "protected"])
    out = capsys.readouterr().out
    assert status == EXIT_GUEST_FAULT
    assert "stopped: exception #UD (vector 6) at 0x800e" in out
    assert "rax=0000000000000004" in out and "rbx=0000000000000005" in out
    assert "rcx=0000000000000009" in out


def test_run_raw_hello_prints_each_exit(device, capsys):
    assert main(["--device", device, "run-raw", str(build("hello_real")), "--mode", "real"]) == 0
    out = capsys.readouterr().out
    assert out.count("io out  port=0x03f8") == len("Hello from real mode\n")
    assert "stopped: HLT (with interrupts off)" in out


@pytest.mark.parametrize("argv, message", [
    (["run-raw", "/nonexistent.bin", "--mode", "real"], "cannot read /nonexistent.bin"),
    (["--device", "/dev/nonexistent", "info"], "tried /dev/nonexistent"),
    (["run-raw", "BIN", "--mode", "real", "--mem", "16K"], "does not fit"),
    (["--abi", "kext", "--device", "/dev/nonexistent", "info"], "tried /dev/nonexistent"),
    (["--device", "/dev/kvm", "info", "ABI=bogus"], "unknown ABI 'bogus'"),
])
def test_user_errors_are_one_line_without_traceback(argv, message):
    env, argv = dict(os.environ), list(argv)
    for a in [a for a in argv if a.startswith("ABI=")]:
        env["PYHOST_ABI"] = a.removeprefix("ABI=")
        argv.remove(a)
    argv = [str(build("irq_prot")) if a == "BIN" else a for a in argv]
    res = subprocess.run([sys.executable, "-m", "pyhost", *argv], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_the_abi_follows_the_flag_the_environment_then_the_node(monkeypatch):
    from pyhost.ioctl import device_abi

    monkeypatch.delenv("PYHOST_ABI", raising=False)
    assert device_abi("/dev/kvmport") == ("kext" if sys.platform == "darwin" else "linux")
    assert device_abi("/dev/kvmport-kext") == "kext"
    assert device_abi("/dev/kvmport-kext", "linux") == "linux"
    monkeypatch.setenv("PYHOST_ABI", "kext")
    assert device_abi("/dev/kvm") == "kext"
    assert device_abi("/dev/kvm", "linux") == "linux"
