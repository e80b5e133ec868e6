"""Core tasks: build-bintest, test, lint, ci."""

from __future__ import annotations

import shlex
import sys

from invoke import task
from invoke.context import Context

PY = shlex.quote(sys.executable)
PYTHON_SOURCES = "pyhost tests bintest lab bench tasks.py tasks_core.py tasks_qemu.py qemu_build.py"


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
    build_bintest(c)
    # build the cffi modules here: the lab guest may have no compiler (VMX lab)
    c.run(f"{PY} -m pytest -q -p no:cacheprovider --collect-only tests >/dev/null")
    c.run(f"{PY} -m invoke lab --cpu {cpu} -- sh tests/lab/suite.sh", pty=False)


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
    build_bintest(c)
    # build the cffi modules here: the lab guest has no compiler or Python headers
    c.run(f"{PY} -m pytest -q -p no:cacheprovider --collect-only tests >/dev/null")
    c.run(f"{PY} -m invoke lab --cpu vmx -- sh tests/lab/suite_vmx.sh", pty=False)


@task
def ci(c: Context) -> None:
    """Everything CI runs: lint, the host tests, the SVM lab suite, the VMX lab suite."""
    lint(c)
    test(c)
    test_lab(c, cpu="svm")
    test_vmx(c)


@task(help={"runs": "runs per figure (the best counts)"})
def bench(c: Context, runs: int = 3) -> None:
    """In the SVM lab, on Linux KVM and kvmport: exit round trips, a compute loop and
    bootfd.img to its banner, with ratios."""
    build_bintest(c)
    c.run(f"{PY} -c 'from bench.micro import c_loop; c_loop()'")
    c.run(f"{PY} -m invoke lab --cpu svm -- 'insmod $KVMPORT_KO && python3 -m bench "
          f"--runs {runs} --boot --device /dev/kvm --device /dev/kvmport; s=$?; rmmod kvmport; "
          "exit $s'",
          pty=False)


DKMS_VERSION = "0.1.0"


@task(help={"kernel": "kernel release to build for (default: the running kernel)",
            "kernel_source": "its build tree, if not /lib/modules/KERNEL/build",
            "no_install": "add and build only; do not install the module"})
def install_dkms(c: Context, kernel: str = "", kernel_source: str = "",
                 no_install: bool = False) -> None:
    """Register kvmport with DKMS (/usr/src/kvmport-VERSION) and build it for a kernel."""
    import shutil
    from pathlib import Path

    src = Path(f"/usr/src/kvmport-{DKMS_VERSION}")
    c.run(f"dkms remove -m kvmport -v {DKMS_VERSION} --all", warn=True, hide=True)
    if src.exists():
        shutil.rmtree(src)
    ignore = shutil.ignore_patterns("*.o", "*.ko", "*.cmd", "*.mod", "*.mod.c", "user",
                                    "modules.order", "Module.symvers", ".*")
    for part in ("include", "core", "lkm"):
        shutil.copytree(part, src / part, ignore=ignore)
    shutil.copy("lkm/dkms.conf", src / "dkms.conf")
    target = f"-k {kernel}" if kernel else ""
    srcdir = f"--kernelsourcedir {kernel_source}" if kernel_source else ""
    c.run(f"dkms add -m kvmport -v {DKMS_VERSION}")
    c.run(f"dkms build -m kvmport -v {DKMS_VERSION} {target} {srcdir}")
    if not no_install:
        c.run(f"dkms install -m kvmport -v {DKMS_VERSION} {target} {srcdir}")
