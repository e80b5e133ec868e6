"""Probe: create and destroy VMs in a loop, as the test suite does, to catch a hang in
the per-CPU SVM on/off calls (docs/driver.md, "Open bug").

Run inside the SVM lab with kvmport loaded:
    invoke lab --cpu svm -- 'insmod $KVMPORT_KO && python3 -m lab.probes.vm_churn 2000'
    invoke lab --cpu svm -- 'insmod $KVMPORT_KO && \
        python3 -m lab.probes.vm_churn 2000 /dev/kvmport,/dev/kvm 3'
Arguments: rounds per thread, devices (comma-separated, taken in turn), threads.
Each round creates a VM with 1 MiB of memory and a VCPU, runs a guest that spins a
while, does a few port writes and halts, and closes the VM. With no other VM alive,
every round turns SVM on and off on every CPU (two cross-CPU calls). With several
threads and both devices, VMs come and go while other CPUs are in guest mode, and the
two hypervisors contend for SVM: a VM that cannot be made because the other one has
SVM (EBUSY) is counted, not an error. Prints progress every 100 rounds.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time

from pyhost import Hlt, IoOut, Kvm
from pyhost.errors import KvmError
from pyhost.raw import load_raw

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
DEVICES = (sys.argv[2] if len(sys.argv) > 2 else "/dev/kvmport").split(",")
THREADS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
STALL = 60  # seconds without a finished round before the watchdog reports a hang

# real mode: spin 20000 times, write 3 bytes to port 0x80, halt
GUEST = bytes.fromhex(
    "66b9204e0000"  # mov ecx, 20000
    "67e2fd"  # a32 loop $
    "b90300"  # mov cx, 3
    "e680"  # out 0x80, al
    "e2fc"  # loop (out)
    "f4"  # hlt
)

busy = [0] * THREADS
done = [0] * THREADS
failures: list[str] = []


def churn(t: int) -> None:
    kvms = [Kvm(d) for d in DEVICES]
    try:
        for i in range(1, ROUNDS + 1):
            kvm = kvms[(i + t) % len(kvms)]
            try:
                g = load_raw(kvm, GUEST, "real", memory=1 << 20)
            except KvmError as e:
                if e.errno != errno.EBUSY:
                    raise
                busy[t] += 1
                continue
            with g:
                outs = 0
                while not isinstance(ex := g.vcpu.run(), Hlt):
                    assert isinstance(ex, IoOut) and ex.port == 0x80, ex
                    outs += 1
                assert outs == 3, outs
            done[t] += 1
            if i % 100 == 0:
                print(f"vm_churn[{t}]: {i} rounds, {done[t]} ran, {busy[t]} EBUSY", flush=True)
    except Exception as e:  # reported by the main thread
        failures.append(f"thread {t}: {e!r}")
    finally:
        for k in kvms:
            k.close()


def watchdog() -> None:
    """No round finished for STALL s: show where every thread waits, then fail."""
    last, since = -1, time.monotonic()
    while any(w.is_alive() for w in workers):
        time.sleep(1)
        now = sum(done) + sum(busy)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL:
            print(f"vm_churn: no progress for {STALL} s; thread kernel stacks:", flush=True)
            for tid in sorted(os.listdir("/proc/self/task")):
                d = f"/proc/self/task/{tid}"
                with open(f"{d}/stat") as f:
                    state = f.read().split(")")[1].split()[0]
                print(f"--- task {tid} state {state}", flush=True)
                try:
                    with open(f"{d}/stack") as f:
                        print(f.read(), flush=True)
                except OSError as e:
                    print(f"(no stack: {e})", flush=True)
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("l")  # every CPU's backtrace, to the console
            time.sleep(3)
            os._exit(3)


t0 = time.monotonic()
workers = [threading.Thread(target=churn, args=(t,)) for t in range(THREADS)]
for w in workers:
    w.start()
threading.Thread(target=watchdog, daemon=True).start()
for w in workers:
    w.join()
print(
    f"vm_churn: {THREADS} x {ROUNDS} rounds on {','.join(DEVICES)} in "
    f"{time.monotonic() - t0:.1f} s: {sum(done)} ran, {sum(busy)} EBUSY"
)
if failures:
    sys.exit("vm_churn: " + "; ".join(failures))
