"""`invoke lab`: run a command in a lab machine (lab/ does it)."""

from __future__ import annotations

import sys

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
        "kernel": "Debian kernel ABI for the lab (default: what linux-image-amd64 depends on), "
        "or debug: KASAN/KFENCE/lockdep/kmemleak kernel built from linux-source (svm only, "
        "built once and cached; docs/lab.md)",
        "timeout": "seconds for the whole run (default: 3600 svm, 7200 vmx)",
        "boot_timeout": "seconds until the command must have started (default: 300 svm, 1200 vmx)",
        "memory": "guest memory (default 2G svm, 1024M vmx)",
        "cpus": "guest CPUs (svm only; default 2)",
        "verbose": "also stream the guest's boot log",
        "no_module": "do not build lkm/ for the lab kernel before booting",
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
    no_module: bool = False,
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
            build_module_first=not no_module,
            pip=pip,
        )
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=125) from None
    except KeyboardInterrupt:
        raise Exit("lab: interrupted; the lab machine was stopped", code=130) from None
    if status:
        raise Exit(code=status)
