"""Core tasks: build-bintest, test, lint, ci."""

from __future__ import annotations

import shlex
import sys

from invoke import task
from invoke.context import Context

PY = shlex.quote(sys.executable)
PYTHON_SOURCES = "pyhost tests bintest lab tasks.py tasks_core.py"


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
    """The micro-guest suite against the lab's Linux KVM, then the lab tests (kvmport.ko)."""
    build_bintest(c)
    c.run(f"{PY} -m invoke lab --cpu {cpu} -- "
          f"{PY} -m pytest -ra -p no:cacheprovider tests/guests tests/unit tests/lab "
          "--device /dev/kvm", pty=False)


@task
def lint(c: Context) -> None:
    """ruff and mypy on the Python; checkpatch on kernel C comes with the lab tasks."""
    c.run(f"{PY} -m ruff check {PYTHON_SOURCES}")
    c.run(f"{PY} -m mypy pyhost")


@task
def ci(c: Context) -> None:
    """Everything CI runs: lint, the host tests, and the SVM lab suite."""
    lint(c)
    test(c)
    test_lab(c, cpu="svm")
