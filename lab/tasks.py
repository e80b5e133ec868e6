"""Lab tasks: `invoke lab` (run a command in a lab machine) and `invoke build-kext`."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from lab.common import LabError


def _argv_after_dashes(c: Context) -> list[str]:
    """COMMAND as given after `--` (exact argv from sys.argv; invoke only keeps a joined string)."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    import shlex

    return shlex.split(c.remainder)


@task(
    help={
        "cpu": "svm (QEMU TCG, AMD-V, fast) or vmx (Bochs, Intel VT-x, slow)",
        "kernel": "Debian kernel ABI for the lab (default: what linux-image-amd64 depends on)",
        "timeout": "seconds for the whole run (default: 3600 svm, 7200 vmx)",
        "boot_timeout": "seconds until the command must have started (default: 300 svm, 1200 vmx)",
        "memory": "guest memory (default 2G svm, 1024M vmx)",
        "cpus": "guest CPUs (svm only; default 2)",
        "verbose": "also stream the guest's boot log",
        "no_kext": "do not build lkm/ for the lab kernel before booting",
        "pip": "extra pip requirements for the lab's Python (comma separated); it always has "
        "pyproject's dependencies + dev extras (minus ruff/mypy/invoke) and pytest",
    },
)
def lab(
    c: Context,
    cpu: str = "svm",
    kernel: str = "",
    timeout: float = 0,
    boot_timeout: float = 0,
    memory: str = "",
    cpus: int = 2,
    verbose: bool = False,
    no_kext: bool = False,
    pip: str = "",
) -> None:
    """Boot a lab machine and run COMMAND in it: invoke lab --cpu svm|vmx -- COMMAND...

    The checkout is at the same path inside the guest (svm: host fs over 9p;
    vmx: a copy on the guest's disk). Linux's kvm_amd/kvm_intel is loaded so
    /dev/kvm is the reference; kvmport.ko is built for the lab kernel and its path
    is in $KVMPORT_KO; $KVMPORT_LAB is svm or vmx. Exits with COMMAND's status
    (124 on timeout, 125 if the lab failed). Guest dmesg and console: build/lab/<cpu>/last/.
    One COMMAND argument is a shell command line; several are an argv.
    """
    from lab.main import run_lab

    argv = _argv_after_dashes(c)
    try:
        status = run_lab(
            cpu=cpu,
            argv=argv,
            kernel=kernel or None,
            timeout=timeout,
            boot_timeout=boot_timeout,
            memory=memory,
            cpus=cpus,
            verbose=verbose,
            build_kext_first=not no_kext,
            pip=pip,
        )
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=125) from None
    except KeyboardInterrupt:
        raise Exit("lab: interrupted; the lab machine was stopped", code=130) from None
    if status:
        raise Exit(code=status)


@task(
    help={
        "kdir": "kernel build tree to build against (default: the running kernel's, or "
        "the lab kernel's headers when this host cannot load modules)",
        "lab_kernel": "build against the lab kernel's headers (Debian linux-headers-<abi>)",
        "load": "load the module after building: insmod here if the host can, else in the "
        "SVM lab (default); --no-load to only build",
        "cpu": "lab to load it in when the host cannot (svm or vmx)",
    },
)
def build_kext(
    c: Context, kdir: str = "", lab_kernel: bool = False, load: bool = True, cpu: str = "svm"
) -> None:
    """Build lkm/ (kvmport.ko) against a kernel's headers and load it.

    On a Linux host with module loading: the running kernel's headers, then insmod
    (reloading an older copy) and a KVM_GET_API_VERSION check. Here (no modules on
    the host): the lab kernel's headers, then load/check/unload inside the lab.
    """
    from lab.main import build_and_load

    try:
        status = build_and_load(
            kdir=Path(kdir) if kdir else None, lab_kernel=lab_kernel, load=load, cpu=cpu
        )
    except LabError as exc:
        raise Exit(f"build-kext: {exc}", code=125) from None
    if status:
        raise Exit(code=status)


@task(
    iterable=["path"],
    help={
        "path": "directory to check (repeatable; default lkm)",
        "strict": "also report checkpatch's CHECK-level (--strict) findings",
    },
)
def checkpatch(c: Context, path: list[str] | None = None, strict: bool = False) -> None:
    """Run Linux's checkpatch.pl --no-tree on lkm/ C files (script cached from linux-source)."""
    from lab.checkpatch import run_checkpatch

    try:
        run_checkpatch(path or ["lkm"], strict=strict)
    except LabError as exc:
        raise Exit(f"checkpatch: {exc}", code=1) from None
