"""Core tasks: build-bintest, test, test-lab, test-vmx, lint, ci."""

from __future__ import annotations

import shlex
import sys

from invoke import task
from invoke.context import Context

PY = shlex.quote(sys.executable)
PYTHON_SOURCES = "pyhost tests bintest lab bench tasks"


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
    _lab_suite(c, cpu, "tests/lab/suite.sh")


def _lab_suite(c: Context, cpu: str, script: str) -> None:
    build_bintest(c)
    # build the cffi modules here: the lab guest may have no compiler or Python headers
    # (the VMX lab)
    c.run(f"{PY} -m pytest -q -p no:cacheprovider --collect-only tests >/dev/null")
    c.run(f"{PY} -m invoke lab --cpu {cpu} -- sh {script}", pty=False)


@task
def lint(c: Context) -> None:
    """ruff and mypy on the Python, checkpatch.pl --no-tree on the kernel C."""
    from lab.checkpatch import run_checkpatch

    c.run(f"{PY} -m ruff check {PYTHON_SOURCES}")
    c.run(f"{PY} -m mypy pyhost bench")
    run_checkpatch(["lkm", "core", "include"])


@task
def test_vmx(c: Context) -> None:
    """In one VMX lab boot (Bochs, Intel VT-x, slow): kvmport.ko loads, answers and unloads
    cleanly; the micro-guest suite and bootfd.img's boot pass on Linux's kvm_intel."""
    _lab_suite(c, "vmx", "tests/lab/suite_vmx.sh")


@task
def ci(c: Context) -> None:
    """Everything CI runs: lint, the host tests, the SVM lab suite, the VMX lab suite."""
    lint(c)
    test(c)
    test_lab(c, cpu="svm")
    test_vmx(c)
