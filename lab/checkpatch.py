"""checkpatch.pl from Debian's linux-source package, cached (never committed)."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from lab.common import REPO, LabError, cache_dir, candidate_version, fetch_deb, log, run

# What checkpatch.pl reads next to itself (missing ones only cost warnings about them).
WANTED = ("scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch")


def source_package() -> str:
    """linux-source-<major.minor> matching the lab kernel (from linux-source's dependency)."""
    out = run(["apt-cache", "depends", "linux-source"], capture=True)
    m = re.search(r"Depends:\s*(linux-source-\d+\.\d+)", out)
    if not m:
        raise LabError(f"cannot find linux-source-X.Y via `apt-cache depends linux-source`:\n{out}")
    return m.group(1)


def checkpatch_pl() -> Path:
    """Path of a cached checkpatch.pl (extracted once per linux-source version)."""
    pkg = source_package()
    dest = cache_dir() / "checkpatch" / f"{pkg}_{candidate_version(pkg)}"
    script = dest / "scripts" / "checkpatch.pl"
    if script.exists():
        return script
    deb = fetch_deb(pkg)
    tmp = dest.with_name(dest.name + ".tmp")
    run(["rm", "-rf", tmp])
    tmp.mkdir(parents=True)
    log(f"extracting checkpatch.pl from {deb.name}")
    run(["dpkg-deb", "-x", deb, tmp / "deb"])
    tarballs = sorted((tmp / "deb" / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise LabError(f"no source tarball in {deb}")
    with tarfile.open(tarballs[0]) as tf:
        for member in tf:
            parts = member.name.split("/", 1)
            if len(parts) == 2 and parts[1] in WANTED:
                f = tf.extractfile(member)
                if f is None:
                    continue
                out = tmp / parts[1]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(f.read())
                if parts[1].endswith(".pl"):
                    out.chmod(0o755)
    run(["rm", "-rf", tmp / "deb"])
    if not (tmp / "scripts" / "checkpatch.pl").exists():
        raise LabError(f"checkpatch.pl not found in {tarballs[0].name}")
    run(["rm", "-rf", dest])
    tmp.rename(dest)
    return script


def sources(dirs: list[str]) -> list[Path]:
    """C and assembler files under dirs, tracked or about to be (not Kbuild's *.mod.c)."""
    out = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *dirs],
        cwd=REPO,
        capture=True,
    )
    return sorted(
        REPO / p for p in out.split("\0") if p.endswith((".c", ".h", ".S")) and (REPO / p).exists()
    )


def run_checkpatch(dirs: list[str], strict: bool = False) -> None:
    """checkpatch.pl --no-tree over the C files of dirs; raise on any finding."""
    script = checkpatch_pl()
    files = sources(dirs)
    if not files:
        raise LabError(f"no C files under {', '.join(dirs)}")
    cmd = ["perl", str(script), "--no-tree", "--terse", "--show-types", "-f"]
    if strict:
        cmd.append("--strict")
    cmd += [str(f) for f in files]
    try:
        out = run(cmd, capture=True)
    except LabError as exc:
        raise LabError(f"checkpatch.pl found problems:\n{exc}") from None
    log(out.strip() or f"checkpatch.pl: {len(files)} files clean")
