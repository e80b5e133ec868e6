"""`invoke fuzz`: the seeded ioctl fuzzer (lab/fuzz.py) in the SVM lab, kvmport loaded."""

from __future__ import annotations

import shlex

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from lab.common import LabError
from lab.kernel import DEBUG

# 100,000 calls: 76-149 s of fuzzing in the SVM lab, 92-184 s with the boot (docs/lab.md)
DEFAULT_CALLS = 100_000


@task(
    iterable=["device"],
    help={
        "seed": "the seed (random.Random); the same seed and calls replay a run",
        "calls": f"how many calls (ioctl, mmap, close, ...; default {DEFAULT_CALLS})",
        "device": "device to fuzz, repeatable (default both: /dev/kvm and /dev/kvmport, "
        "with the differential batches)",
        "keep_going": "report every differential finding, not only the first",
        "timeout": "seconds for the whole lab run (default 1800)",
        "kernel": "the lab kernel (invoke lab --kernel); debug: the KASAN/lockdep/kmemleak "
        "kernel, then also python3 -m lab.debugkernel.check",
    },
)
def fuzz(
    c: Context,
    seed: int = 1,
    calls: int = DEFAULT_CALLS,
    device: list[str] | None = None,
    keep_going: bool = False,
    timeout: float = 1800,
    kernel: str = "",
) -> None:
    """Boot the SVM lab, load kvmport, fuzz ioctl sequences on kvm_amd and kvmport (and
    compare them), unload kvmport: fails on a finding, a WARN/BUG/oops, a leak or a hang."""
    from lab.main import run_lab

    args = ["--seed", str(seed), "--calls", str(calls), "--rmmod"]
    for d in device or []:
        args += ["--device", d]
    if keep_going:
        args.append("--keep-going")
    # a soft lockup fails at once with every CPU's backtrace (as tests/lab/suite.sh)
    cmd = ("echo 1 > /proc/sys/kernel/softlockup_all_cpu_backtrace && "
           "echo 1 > /proc/sys/kernel/softlockup_panic && "
           'insmod "$KVMPORT_KO" && python3 -m lab.fuzz ' + shlex.join(args))
    if kernel == DEBUG:  # and whatever KASAN/lockdep/kmemleak saw (kvmport is unloaded)
        cmd = f"{cmd}; s=$?; python3 -m lab.debugkernel.check || s=1; exit $s"
    try:
        status = run_lab(cpu="svm", argv=[cmd], kernel=kernel or None, timeout=timeout,
                         boot_timeout=0, memory="", cpus=2, verbose=False,
                         build_module_first=True, pip="")
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=125) from None
    if status:
        raise Exit(f"fuzz: failed (status {status}); reproduce: invoke fuzz --seed {seed} "
                   f"--calls {calls}" + "".join(f" --device {d}" for d in device or [])
                   + (f" --kernel {kernel}" if kernel else ""),
                   code=status)
