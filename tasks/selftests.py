"""`invoke build-selftests`, `invoke selftests`: Linux's KVM selftests (lab/selftests/)."""

from __future__ import annotations

import shlex

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from lab.common import LabError

# Left out of the CI subset (`--ci`): the tests that took 15 s or more on kvm_amd in the SVM
# lab (or hit the 60 s limit). The full run took 9 min 20 s, the subset is every other test
# (docs/lab.md, "KVM selftests", has the timings).
SLOW = [
    "demand_paging_test", "dirty_log_perf_test", "hardware_disable_test",
    "kvm_page_table_test", "memslot_modification_stress_test", "memslot_perf_test",
    "rseq_test", "set_memory_region_test",
]


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
        "ci": "the CI subset: all but the slow tests (SLOW in tasks/selftests.py)",
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
    names = list(only or [])
    if ci and not names:
        names = [t for t in (out / "TESTS").read_text().split() if t not in SLOW]
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
