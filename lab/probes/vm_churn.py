"""Probe: create and destroy VMs in a loop, as the test suite does, to catch a hang in
the per-CPU SVM on/off calls (docs/driver.md, "Open bug").

Run inside the SVM lab with kvmport loaded:
    invoke lab --cpu svm -- 'insmod $KVMPORT_KO && python3 -m lab.probes.vm_churn 2000'
Each round creates a VM with 1 MiB of memory and a VCPU, runs a HLT guest once and
closes it; with no other VM alive, every round turns SVM on and off on every CPU
(two cross-CPU calls). Prints progress every 100 rounds and the rate.
"""

from __future__ import annotations

import sys
import time

from pyhost import Hlt, Kvm
from pyhost.raw import load_raw

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
DEVICE = sys.argv[2] if len(sys.argv) > 2 else "/dev/kvmport"

with Kvm(DEVICE) as kvm:
    t0 = time.monotonic()
    for i in range(1, ROUNDS + 1):
        g = load_raw(kvm, b"\xf4", "real", memory=1 << 20)  # hlt
        ex = g.vcpu.run()
        assert isinstance(ex, Hlt), ex
        g.close()
        if i % 100 == 0:
            rate = i / (time.monotonic() - t0)
            print(f"vm_churn: {i} rounds on {DEVICE}, {rate:.1f}/s", flush=True)
print(f"vm_churn: done, {ROUNDS} rounds in {time.monotonic() - t0:.1f} s")
