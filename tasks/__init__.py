"""Project tasks (invoke), one module per area; `invoke --list` shows them.

    core.py        build-bintest, test, test-lab, test-vmx, lint, ci
    labs.py        lab
    kext.py        build-kext, checkpatch, install-dkms
    bootfd.py      build-bootfd (the bintest/bootfd.img recipe)
    benchmarks.py  bench, bench-boot (the measuring is bench/'s)
    qemu.py        build-qemu (the building is qemu_build.py's)
    fuzz.py        fuzz (the fuzzing is lab/fuzz.py's, in the SVM lab)

invoke puts tasks/ itself first on sys.path: a module here named like a top-level package
(lab, bench, ...) would hide it, hence labs.py and benchmarks.py.
"""

from invoke import Collection

from . import benchmarks, bootfd, core, fuzz, kext, labs, qemu

ns = Collection()
for module in (core, labs, kext, bootfd, benchmarks, qemu, fuzz):
    for t in Collection.from_module(module).tasks.values():
        ns.add_task(t)
