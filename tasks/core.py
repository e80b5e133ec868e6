"""Core tasks: build-bintest, test, test-lab, test-vmx, lint, ci."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

PY = shlex.quote(sys.executable)
PYTHON_SOURCES = "pyhost tests bintest lab bench tasks qemu_build.py darwin_build.py"


@task
def build_bintest(c: Context) -> None:
    """Assemble the micro-guests of bintest/guests into bintest/out/*.bin."""
    from bintest.build import build_all

    for path in build_all():
        print(path)


@task(
    iterable=["device"],
    help={
        "device": "KVM device for the kvm-marked tests (repeatable; default /dev/kvm)",
        "k": "only tests matching this pytest -k expression",
    },
)
def test(c: Context, device: list[str] | None = None, k: str = "") -> None:
    """Host tests: ABI conformance, pyhost unit tests, micro-guests on the host's KVM device.

    Lab tests (tests/lab) are not run here: `invoke test-lab` runs them in the lab.
    """
    build_bintest(c)
    args = ["-m", "not lab"] + [f"--device={d}" for d in device or []]
    if k:
        args += ["-k", k]
    c.run(f"{PY} -m pytest -ra {' '.join(shlex.quote(a) for a in args)}", pty=False)


@task(help={"cpu": "svm or vmx"})
def test_lab(c: Context, cpu: str = "svm") -> None:
    """In one lab boot: every device test on Linux KVM and on kvmport, the differential
    test, then kvmport.ko's load/unload, dmesg and leak checks (tests/lab/suite.sh)."""
    _lab_suite(c, cpu, SUITES["svm"])


def _prepare_lab(c: Context) -> None:
    build_bintest(c)
    # build the cffi modules here: the lab guest may have no compiler or Python headers
    # (the VMX lab)
    c.run(f"{PY} -m pytest -q -p no:cacheprovider --collect-only tests >/dev/null")


def _lab_suite(c: Context, cpu: str, script: str) -> None:
    _prepare_lab(c)
    env = {"KVMPORT_QEMU": str(_patched_qemu())} if cpu == "svm" else {}
    c.run(f"{PY} -m invoke lab --cpu {cpu} -- sh {script}", pty=False, env=env)


def _patched_qemu() -> Path:
    """The patched QEMU the SVM suite's tests/lab/test_qemu.py runs (cached after the
    first build, ~5 min on 2 cores); the lab gets its path in KVMPORT_QEMU."""
    from qemu_build import build

    return build()


SUITES = {"svm": "tests/lab/suite.sh", "vmx": "tests/lab/suite_vmx.sh"}


def _labs_side_by_side(c: Context) -> None:
    """Both lab suites at once: each emulator runs guest code on one host core; after
    the SVM suite (the shorter), Linux's KVM selftests (the CI subset) in a second SVM lab.

    The module and the labs' Python are made once first (two labs making them at once
    would race); the VMX suite's output is kept in a file and printed when both are done.
    """
    import os
    import shlex
    import subprocess

    from lab.kernel import lab_kernel
    from lab.module import build_module
    from lab.pyenv import lab_python
    from lab.selftests.build import build as build_selftests

    from .selftests import SLOW

    _prepare_lab(c)
    ko = build_module(lab_kernel(None).headers, quiet=True)
    lab_python()  # the labs' shared venv, made once: two labs making it at once collide
    st = build_selftests()  # cached; ~2.5 min the first time
    names = [t for t in (st / "TESTS").read_text().split() if t not in SLOW]
    selftests = "python3 -m lab.selftests run " + shlex.join(
        [str(st), "--timeout", "60", "--only", *names])
    env = dict(os.environ, KVMPORT_KO=str(ko), KVMPORT_QEMU=str(_patched_qemu()))
    log_path = Path("build/lab/vmx-suite.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lab = [sys.executable, "-m", "invoke", "lab", "--no-module"]
    with log_path.open("w") as log:
        print(f"[ci] VMX lab suite started in the background; its output: {log_path}",
              flush=True)
        vmx = subprocess.Popen([*lab, "--cpu", "vmx", "--", "sh", SUITES["vmx"]], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            svm = subprocess.run([*lab, "--cpu", "svm", "--", "sh", SUITES["svm"]], env=env,
                                 stdin=subprocess.DEVNULL).returncode
            print("[ci] Linux's KVM selftests (CI subset) in the SVM lab", flush=True)
            st_status = subprocess.run([*lab, "--cpu", "svm", "--", selftests], env=env,
                                       stdin=subprocess.DEVNULL).returncode
            vmx_status = vmx.wait()
        finally:
            if vmx.poll() is None:
                vmx.terminate()
                vmx.wait()
    print("[ci] ---- the VMX lab suite's output ----", flush=True)
    print(log_path.read_text(), flush=True)
    print(f"[ci] SVM lab suite exit {svm}, KVM selftests exit {st_status}, VMX lab suite "
          f"exit {vmx_status}", flush=True)
    if svm or st_status or vmx_status:
        raise Exit("a lab suite failed", code=1)


@task
def lint(c: Context) -> None:
    """ruff and mypy on the Python, checkpatch.pl --no-tree on the kernel C."""
    from lab.checkpatch import run_checkpatch

    c.run(f"{PY} -m ruff check {PYTHON_SOURCES}")
    c.run(f"{PY} -m mypy pyhost bench")
    run_checkpatch(["lkm", "core", "include", "kext"])


@task
def test_vmx(c: Context) -> None:
    """In one VMX lab boot (Bochs, Intel VT-x, slow): the micro-guests, the differential
    test and bootfd.img's boot on kvm_intel and on kvmport; kvmport unloads cleanly."""
    _lab_suite(c, "vmx", SUITES["vmx"])


@task
def ci(c: Context) -> None:
    """Everything CI runs: lint, host tests, then both lab suites side by side."""
    lint(c)
    test(c)
    _labs_side_by_side(c)
