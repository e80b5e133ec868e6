"""`invoke build-qemu`: QEMU with qemu-patches/ applied (the work is in qemu_build.py)."""

from __future__ import annotations

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit


@task(help={"jobs": "parallel compile jobs (default 2)"})
def build_qemu(c: Context, jobs: int = 2) -> None:
    """Build Debian 12's QEMU 7.2 with qemu-patches/ (cached); print qemu-system-x86_64's path."""
    from lab.common import LabError
    from qemu_build import build

    try:
        print(build(jobs))
    except LabError as exc:
        raise Exit(f"build-qemu: {exc}", code=1) from exc
