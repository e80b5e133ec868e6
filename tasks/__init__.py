"""Project tasks (invoke), one module per area; `invoke --list` shows them.

    core.py        build-bintest, test, test-lab, test-vmx, lint, ci
    labs.py        lab
    kext.py        build-kext, checkpatch, install-dkms
    bootfd.py      build-bootfd (the bintest/bootfd.img recipe)
    benchmarks.py  bench, bench-boot (the measuring is bench/'s)
    qemu.py        build-qemu (the building is qemu_build.py's)
    fuzz.py        fuzz (the fuzzing is lab/fuzz.py's, in the SVM lab)
    selftests.py   build-selftests, selftests (Linux's KVM selftests: lab/selftests/)

invoke puts tasks/ itself first on sys.path: a module here named like a top-level package
(lab, bench, ...) would hide it, hence labs.py and benchmarks.py.
"""

import sys
from pathlib import Path

from invoke import Collection

# the `invoke` script (unlike `python3 -m invoke`) leaves the checkout off sys.path
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from . import benchmarks, bootfd, core, fuzz, kext, labs, qemu, selftests  # noqa: E402

ns = Collection()
for module in (core, labs, kext, bootfd, benchmarks, qemu, fuzz, selftests):
    for t in Collection.from_module(module).tasks.values():
        ns.add_task(t)
