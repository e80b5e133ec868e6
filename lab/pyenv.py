"""The lab's Python: a lean venv (project + test dependencies only) in the cache.

Both labs run the guest's Python from it: in the SVM lab over 9p (a lean
site-packages keeps pytest's plugin scan and imports fast under TCG), in the VMX
lab packed onto the guest disk together with the base interpreter it points to.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from pathlib import Path

from lab.common import REPO, cache_dir, log, run

# Development tools not needed to run tests in a guest.
NOT_IN_GUEST = {"ruff", "mypy", "invoke"}


def requirements(extra: str = "") -> list[str]:
    """pyproject's dependencies + dev extras (minus lint tools), plus pytest and extra."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data.get("project", {})
    reqs = list(project.get("dependencies", []))
    reqs += project.get("optional-dependencies", {}).get("dev", [])
    reqs.append("pytest")
    reqs += [r for r in re.split(r"[,\s]+", extra) if r]
    keep = []
    for r in reqs:
        name = re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower()
        if name not in NOT_IN_GUEST and r not in keep:
            keep.append(r)
    return sorted(keep)


def lab_python(extra: str = "") -> Path:
    """Path of the lab venv's python (created and filled once per requirement set)."""
    reqs = requirements(extra)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    key = hashlib.sha256("\n".join([sys.executable, ver, *reqs]).encode()).hexdigest()[:12]
    venv = cache_dir() / f"labpy-{ver}-{key}"
    py = venv / "bin" / "python"
    done = venv / ".complete"
    if not done.exists():
        log(f"creating the lab Python {venv} ({', '.join(reqs)})")
        run([sys.executable, "-m", "venv", "--clear", venv], capture=True)
        run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs], capture=True)
        done.write_text("\n".join(reqs) + "\n")
    return py
