"""The driver's tasks: build-kext (build lkm/ and load it, here or in the lab; or, with
--os darwin, the macOS kext), checkpatch and install-dkms."""

from __future__ import annotations

from pathlib import Path

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from lab.common import LabError


@task(
    help={
        "kdir": "kernel build tree to build against (default: the running kernel's, or "
        "the lab kernel's headers when this host cannot load modules)",
        "lab_kernel": "build against the lab kernel's headers (Debian linux-headers-<abi>)",
        "load": "load the module after building: insmod here if the host can, else in the "
        "SVM lab (default); --no-load to only build",
        "cpu": "lab to load it in when the host cannot (svm or vmx)",
        "os": "the driver's host OS: linux (lkm/, default) or darwin (kext/: "
        "build/kext/kvmport.kext, built here; docs/kext.md)",
    },
)
def build_kext(
    c: Context,
    kdir: str = "",
    lab_kernel: bool = False,
    load: bool = True,
    cpu: str = "svm",
    os: str = "linux",
) -> None:
    """Build lkm/ (kvmport.ko) against a kernel's headers and load it; or the macOS kext.

    On a Linux host with module loading: the running kernel's headers, then insmod
    (reloading an older copy) and a KVM_GET_API_VERSION check. Here (no modules on
    the host): the lab kernel's headers, then load/check/unload inside the lab.
    --os darwin: build and check build/kext/kvmport.kext (darwin_build.py).
    """
    if os == "darwin":
        import darwin_build

        try:
            print(darwin_build.build())
        except LabError as exc:
            raise Exit(f"build-kext --os darwin: {exc}", code=1) from None
        return
    if os != "linux":
        raise Exit(f"build-kext: --os {os}: linux or darwin", code=2)
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


DKMS_VERSION = "0.1.0"


@task(help={"kernel": "kernel release to build for (default: the running kernel)",
            "kernel_source": "its build tree, if not /lib/modules/KERNEL/build",
            "no_install": "add and build only; do not install the module"})
def install_dkms(c: Context, kernel: str = "", kernel_source: str = "",
                 no_install: bool = False) -> None:
    """Register kvmport with DKMS (/usr/src/kvmport-VERSION) and build it for a kernel."""
    import shutil

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
