"""Build Linux's KVM selftests (x86_64) from Debian's linux-source package, cached.

Only what the build needs is extracted from the source tarball (the top Makefile and
Kbuild files, scripts/, include/, arch/x86/, tools/); our patches (lab/selftests/0*.patch)
are applied, `make headers` installs the UAPI headers the tests include, and
tools/testing/selftests/kvm is built. The cache entry,
~/.cache/kvmport/kvm-selftests-<package>_<version>-<hash>/, keeps only the test binaries
(bin/, with their x86_64/ subdirectory) and TESTS, the list of tests in the Makefile's
order; the hash covers the patches and the make options, so a second call returns at once.
Linux's sources are never committed: they live in the cache's temporary tree only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from lab.checkpatch import source_package
from lab.common import (
    LabError,
    cache_dir,
    cached_build,
    candidate_version,
    log,
    run,
    unpack_linux_source,
)

HERE = Path(__file__).resolve().parent
KVM_DIR = "tools/testing/selftests/kvm"

# What `make headers` and the selftests' Makefiles read (everything else stays packed).
EXTRACT = [
    "Makefile", "Kbuild", "Kconfig",
    "scripts/*", "include/*", "arch/x86/*", "tools/*", "usr/*",
]
# the Makefile picks x86_64 from `uname -m` (the build host is x86_64, like the lab)
MAKE_VARS: list[str] = []
# Debian's 6.1.192 has two tests that do not build (stable backports that need newer
# test library code: dirty_log_test wants TEST_ASSERT_EQ, steal_time a newer
# __DECLARE_FLEX_ARRAY); more than this many missing means the build is broken.
MAX_NOT_BUILT = 4


def patches() -> list[Path]:
    """Our patches to the selftests, applied in name order."""
    found = sorted(HERE.glob("0*.patch"))
    if not found:
        raise LabError(f"no patches in {HERE}")
    return found


def key_hash(pkg: str, version: str, series: list[Path]) -> str:
    """Short hash over the source version, the patches and the make options."""
    h = hashlib.sha256(f"{pkg} {version} {' '.join(MAKE_VARS)} {' '.join(EXTRACT)}".encode())
    for p in series:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def test_list(kvm: Path) -> list[str]:
    """TEST_GEN_PROGS as the Makefile computes it for x86_64, relative to kvm/."""
    out = run(
        ["make", "-s", "-C", kvm, *MAKE_VARS, "--eval",
         "kvmport-print-tests:\n\t@echo $(TEST_GEN_PROGS)", "kvmport-print-tests"],
        capture=True,
    )
    prefix = str(kvm) + "/"
    tests = [t[len(prefix):] if t.startswith(prefix) else t for t in out.split()]
    if len(tests) < 20:
        raise LabError(f"the selftests Makefile listed only {len(tests)} tests: {out}")
    return tests


def build(jobs: int = 2) -> Path:
    """Build (once) and return the directory holding bin/ and TESTS."""
    pkg = source_package()
    version = candidate_version(pkg)
    series = patches()
    out = cache_dir() / f"kvm-selftests-{pkg}_{version.replace(':', '_')}-" \
        f"{key_hash(pkg, version, series)}"
    if (out / "TESTS").is_file():
        return out

    def build_into(work: Path) -> str:
        src = unpack_linux_source(pkg, work / "src", EXTRACT)
        for p in series:
            log(f"patch {p.name}")
            run(["patch", "-p1", "--batch", "--forward", "-i", p], cwd=src, capture=True)
        log("make headers")
        run(["make", "-s", f"-j{jobs}", "ARCH=x86", "headers"], cwd=src, capture=True)
        kvm = src / KVM_DIR
        log(f"make -k -C {KVM_DIR} -j{jobs}")
        # -k: a few tests of 6.1.y's stable updates do not build (not_built below);
        # the rest must
        proc = subprocess.run(["make", "-k", "-C", str(kvm), f"-j{jobs}", *MAKE_VARS],
                              capture_output=True, text=True, check=False)
        (work / "make.log").write_text(proc.stdout + proc.stderr)
        listed = test_list(kvm)
        tests = [t for t in listed if (kvm / t).is_file()]
        not_built = [t for t in listed if t not in tests]
        if len(not_built) > MAX_NOT_BUILT:
            raise LabError(f"{len(not_built)} selftests did not build ({' '.join(not_built)}):"
                           f" see {work / 'make.log'}")
        if not_built:
            log(f"did not build: {' '.join(not_built)} (see {out / 'make.log'})")
        (work / "NOT-BUILT").write_text("".join(f"{t}\n" for t in not_built))
        for t in tests:
            dest = work / "bin" / t
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(kvm / t, dest)
        (work / "TESTS").write_text("".join(f"{t}\n" for t in tests))
        # keep only the binaries (and make.log): the key says what they were built from
        shutil.rmtree(src)
        return (f"source {pkg} {version}\npatches {' '.join(p.name for p in series)}\n"
                f"make {' '.join(MAKE_VARS)}\ntests {len(tests)}\n"
                f"not built {' '.join(not_built) or '-'}\n")

    cached_build(out, build_into, "kvm selftests")
    return out
