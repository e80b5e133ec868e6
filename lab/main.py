"""Entry points behind the invoke tasks."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from lab.common import REPO, LabError, log, run
from lab.kernel import DEBUG, lab_kernel
from lab.module import build_module, host_can_load_modules, running_kernel_kdir
from lab.runner import GUEST_DIR, report

CPUS = ("svm", "vmx")


def run_lab(
    *,
    cpu: str,
    argv: list[str],
    kernel: str | None,
    timeout: float,
    boot_timeout: float,
    memory: str,
    cpus: int,
    verbose: bool,
    build_module_first: bool,
    pip: str,
) -> int:
    # SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so the emulator is stopped.
    signal.signal(signal.SIGTERM, _terminate)
    if cpu not in CPUS:
        raise LabError(f"--cpu must be one of {', '.join(CPUS)}, not {cpu!r}")
    if not argv:
        raise LabError("no command given: invoke lab --cpu svm -- COMMAND...")
    if kernel == DEBUG and cpu != "svm":
        raise LabError("--kernel debug is for the SVM lab only")
    k = lab_kernel(kernel)
    extra_env: dict[str, str] = {"KVMPORT_LAB_KERNEL": k.abi}
    prebuilt = os.environ.get("KVMPORT_KO")
    if prebuilt and not build_module_first:
        # A module built elsewhere: it must live under build/ (the VMX disk copies build/lkm).
        extra_env["KVMPORT_KO"] = str(Path(prebuilt).resolve())
    if build_module_first:
        ko = build_module(k.headers, quiet=True)
        extra_env["KVMPORT_KO"] = str(ko)
        log(f"built {ko.relative_to(REPO)} for {k.abi}")
    # Debian's own kernel, for boot tests (also in the debug lab: the guest to boot)
    stock = lab_kernel(None) if kernel == DEBUG else k
    extra_env["KVMPORT_LAB_VMLINUZ"] = str(stock.vmlinuz)
    if os.environ.get("KVMPORT_QEMU"):  # the patched QEMU (`invoke build-qemu`), for its tests
        extra_env["KVMPORT_QEMU"] = str(Path(os.environ["KVMPORT_QEMU"]).resolve())
    if cpu == "svm":
        from lab.svm import qemu_version, run_svm

        extra_env["KVMPORT_LAB_QEMU"] = qemu_version()

        out, rd = run_svm(
            k,
            argv,
            memory=memory or "2G",
            cpus=cpus,
            boot_timeout=boot_timeout or 300,
            timeout=timeout or 3600,
            verbose=verbose,
            extra_env=extra_env,
            pip=pip,
        )
    else:
        from lab.vmx import run_vmx

        out, rd = run_vmx(
            k,
            argv,
            memory=memory or "1024M",
            boot_timeout=boot_timeout or 1200,
            timeout=timeout or 7200,
            verbose=verbose,
            extra_env=extra_env,
            pip=pip,
        )
    return report(out, rd)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def build_and_load(*, kdir: Path | None, lab_kernel: bool, load: bool, cpu: str) -> int:
    local = host_can_load_modules() and not lab_kernel
    if kdir is None:
        if local or (not lab_kernel and running_kernel_kdir().exists()):
            kdir = running_kernel_kdir()
        else:
            kdir = lab_kernel_headers()
    ko = build_module(kdir)
    if not load:
        return 0
    check = GUEST_DIR / "module_check.py"
    if local:
        log(f"loading {ko} on this host")
        try:
            run([sys.executable, check, ko])
        except LabError as exc:
            log(str(exc))
            return 1
        return 0
    log("this host cannot load modules: loading it in the lab instead")
    return run_lab(
        cpu=cpu,
        argv=[f"python {shlex.quote(str(check))} {shlex.quote(str(ko))}"],
        kernel=None,
        timeout=0,
        boot_timeout=0,
        memory="",
        cpus=2,
        verbose=False,
        build_module_first=True,
        pip="",
    )


def lab_kernel_headers() -> Path:
    return lab_kernel().headers
