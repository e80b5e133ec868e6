"""`invoke build-selftests`, `invoke selftests`: Linux's KVM selftests (lab/selftests/)."""

from __future__ import annotations

import shlex

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from lab.common import LabError

# The CI subset: tests that pass on kvm_amd in the SVM lab and run in seconds there
# (docs/lab.md, "KVM selftests", has the timings of the full run).
CI_SUBSET: list[str] = []


@task(help={"jobs": "parallel compile jobs (default 2)"})
def build_selftests(c: Context, jobs: int = 2) -> None:
    """Build Linux's KVM selftests (x86_64, Debian's linux-source, our patches; cached);
    print the directory holding bin/ and TESTS."""
    from lab.selftests.build import build

    try:
        print(build(jobs))
    except LabError as exc:
        raise Exit(f"build-selftests: {exc}", code=1) from exc


@task(
    iterable=["only"],
    help={
        "test_timeout": "seconds per test and device (default 60)",
        "only": "run only this test (repeatable), e.g. x86_64/cpuid_test",
        "ci": "only the CI subset (CI_SUBSET in tasks/selftests.py)",
        "timeout": "seconds for the whole lab run (default 3600)",
    },
)
def selftests(
    c: Context,
    test_timeout: float = 60,
    only: list[str] | None = None,
    ci: bool = False,
    timeout: float = 3600,
) -> None:
    """Run the KVM selftests in the SVM lab on kvm_amd, then on kvmport as /dev/kvm; fail
    on a test that passes on kvm_amd but not on kvmport unless lab/selftests/expected.txt
    lists it."""
    from lab.main import run_lab
    from lab.selftests.build import build

    try:
        out = build()
    except LabError as exc:
        raise Exit(f"build-selftests: {exc}", code=1) from exc
    args = [str(out), "--timeout", str(test_timeout)]
    names = list(only or []) or (CI_SUBSET if ci else [])
    if names:
        args += ["--only", *names]
    cmd = "python3 -m lab.selftests run " + shlex.join(args)
    try:
        status = run_lab(cpu="svm", argv=[cmd], kernel=None, timeout=timeout, boot_timeout=0,
                         memory="", cpus=2, verbose=False, build_module_first=True, pip="")
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=125) from None
    if status:
        raise Exit(f"selftests: failed (status {status})", code=status)
