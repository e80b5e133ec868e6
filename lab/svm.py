"""The SVM lab: QEMU TCG with emulated AMD-V, driven by virtme-ng (host root fs over 9p)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.common import (
    LAB_BUILD,
    REPO,
    TOOLS_COMMON,
    TOOLS_SVM,
    cache_dir,
    ensure_packages,
    log,
    run,
)
from lab.kernel import LabKernel
from lab.pyenv import lab_python
from lab.runner import (
    GUEST_DIR,
    Outcome,
    RunDir,
    emulator_stopper,
    make_rundir,
    process_lines,
    start_emulator,
    watch_console,
)

VIRTME_NG = "virtme-ng==1.42"
QEMU_CPU = "qemu64,+svm,+npt,+xsave,+xsaveopt,+avx,+avx2,+f16c,+fma"


def qemu_version() -> str:
    """The host QEMU's version ("7.2.22"): tests mark what its emulated SVM gets wrong."""
    out = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.split("version", 1)[1].split()[0]


def virtme_ng_bin() -> Path:
    """A venv in the cache holding the pinned virtme-ng; return its bin directory."""
    venv = cache_dir() / VIRTME_NG.replace("==", "-")
    vng = venv / "bin" / "vng"
    if not vng.exists():
        log(f"installing {VIRTME_NG} into {venv}")
        run([sys.executable, "-m", "venv", venv], capture=True)
        run([venv / "bin" / "pip", "install", "-q", VIRTME_NG], capture=True)
    return vng.parent


# One TCG thread for both vCPUs.  Under multi-threaded TCG (QEMU 7.2) nested SVM freezes
# the whole lab machine now and then, with Linux's kvm_amd as with kvmport (VM churn on 3
# threads: docs/driver.md, "Open bug"); round-robin TCG has not frozen, and it is what
# exposed kvmport's double interrupt delivery.  KVMPORT_LAB_QEMU_OPTS replaces it (for
# experiments, e.g. "-accel tcg,thread=multi").
QEMU_ACCEL = "-accel tcg,thread=single"
EXTRA_QEMU_OPTS = os.environ.get("KVMPORT_LAB_QEMU_OPTS", QEMU_ACCEL)


def run_svm(
    kernel: LabKernel,
    argv: list[str],
    *,
    memory: str,
    cpus: int,
    boot_timeout: float,
    timeout: float,
    verbose: bool,
    extra_env: dict[str, str],
    pip: str = "",
) -> tuple[Outcome, RunDir]:
    ensure_packages(TOOLS_COMMON + TOOLS_SVM)
    vbin = virtme_ng_bin()
    rd = make_rundir("svm", argv, kvm_modules=kernel.module_deps("kvm_amd"),
                     python=lab_python(pip), extra_env=extra_env)
    LAB_BUILD.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(vbin / "vng"),
        "--verbose",  # without it nothing reaches a non-tty stdout
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--run",
        str(kernel.vmlinuz),
        "--disable-kvm",  # the host has no usable KVM for QEMU: TCG
        "--force-9p",  # virtiofsd cannot start here; skip its retries
        f"--qemu-opts=-cpu {QEMU_CPU} {EXTRA_QEMU_OPTS}".rstrip(),
        f"--rwdir={REPO / 'build'}",
        "--cwd",
        str(REPO),
        "--exec",
        f"sh {GUEST_DIR / 'run.sh'} {rd.env_file}",
    ]
    if kernel.initramfs:
        cmd.insert(1, "--force-initramfs")
    env = dict(os.environ, PATH=f"{vbin}{os.pathsep}{os.environ.get('PATH', '')}")
    log(f"booting the SVM lab: {kernel.abi} under QEMU TCG -cpu {QEMU_CPU} {EXTRA_QEMU_OPTS}")
    proc = start_emulator("vng", cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=env, cwd=REPO)
    out = watch_console(
        process_lines(proc),
        rd,
        boot_timeout=boot_timeout,
        timeout=timeout,
        verbose=verbose,
        stop=emulator_stopper(proc, grace=15),
    )
    return out, rd
