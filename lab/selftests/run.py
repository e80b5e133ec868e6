"""Run Linux's KVM selftests in the SVM lab on kvm_amd, then on kvmport as /dev/kvm, and
compare: every test that passes on kvm_amd must pass on kvmport, unless
lab/selftests/expected.txt names it with a reason.

Runs inside the lab (`invoke selftests`); needs KVMPORT_KO and LAB_KVM_MODULES from it.
Outcomes: exit status 0 pass, 4 (KSFT_SKIP) skip, a timeout, anything else fail. Each
test's output is kept in build/selftests/<device>/<test>.log, the outcomes in
build/selftests/results.json (build/ is the part of the checkout the lab may write).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.common import BUILD

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected.txt"
KSFT_SKIP = 4
# Tests the lab cannot hold, not run on either device.
NOT_RUN = {
    "max_guest_memory_test": "fills ~2 GiB of shared memory: the lab's 2 GiB machine "
    "went out of memory and the OOM killer took the runner too",
}
BAD_DMESG = ("WARNING:", "BUG:", "Oops", "general protection fault", "soft lockup",
             "hung_task", "blocked for more than", "UBSAN", "kmemleak")


@dataclass
class Outcome:
    status: str  # pass, skip, fail, timeout, not run
    rc: int | None
    seconds: float

    def text(self) -> str:
        if self.status == "fail":
            return f"fail({self.rc})"
        return self.status


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def read_expected(path: Path = EXPECTED) -> dict[str, str]:
    """Test name -> reason, from `name  reason` lines (# comments)."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}:{n}: {name} has no reason")
        if name in out:
            raise SystemExit(f"{path}:{n}: {name} is listed twice")
        out[name] = reason.strip()
    return out


def oom_first() -> None:
    """In the test's process: the OOM killer's first choice, not the runner."""
    Path("/proc/self/oom_score_adj").write_text("1000")


def run_one(binary: Path, timeout: float, log: Path) -> Outcome:
    """One test binary, its own process group (killed whole on a timeout)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen([str(binary)], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd="/tmp", start_new_session=True,
                                preexec_fn=oom_first)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # stuck in the kernel: leave it, the dmesg check will say more
                print(f"  {binary.name}: still alive 30 s after SIGKILL", flush=True)
            return Outcome("timeout", None, time.monotonic() - t0)
    secs = time.monotonic() - t0
    if rc == 0:
        return Outcome("pass", rc, secs)
    if rc == KSFT_SKIP:
        return Outcome("skip", rc, secs)
    return Outcome("fail", rc, secs)


def run_all(label: str, bindir: Path, tests: list[str], timeout: float,
            logdir: Path) -> dict[str, Outcome]:
    print(f"== {label}: {len(tests)} tests, {timeout:.0f} s each at most", flush=True)
    t0 = time.monotonic()
    res: dict[str, Outcome] = {}
    for t in tests:
        o = run_one(bindir / t, timeout, logdir / label / (t.replace("/", "_") + ".log"))
        res[t] = o
        print(f"  {label:8} {t:45} {o.text():10} {o.seconds:6.1f} s", flush=True)
    print(f"== {label}: {time.monotonic() - t0:.0f} s", flush=True)
    return res


def module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def dmesg_lines() -> list[str]:
    return sh("dmesg").stdout.splitlines()


def wait_node(path: str) -> None:
    for _ in range(100):
        if Path(path).exists():
            return
        time.sleep(0.1)
    raise SystemExit(f"{path} did not appear")


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python3 -m lab.selftests run")
    ap.add_argument("dir", type=Path, help="the build (invoke build-selftests prints it)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per test (60)")
    ap.add_argument("--only", nargs="*", default=None, help="these tests only")
    ap.add_argument("--all-on-kvmport", action="store_true",
                    help="also run on kvmport the tests that timed out on kvm_amd")
    ap.add_argument("--logdir", type=Path, default=BUILD / "selftests")
    args = ap.parse_args(argv)

    ko = os.environ.get("KVMPORT_KO", "")
    mods = os.environ.get("LAB_KVM_MODULES", "").split()
    if not ko or not Path(ko).is_file() or not mods:
        raise SystemExit("KVMPORT_KO / LAB_KVM_MODULES not set: run through `invoke selftests`")
    if not Path("/sys/module/kvm_amd").exists():
        raise SystemExit("kvm_amd is not loaded (the SVM lab loads it)")
    expected = read_expected()
    tests = (args.dir / "TESTS").read_text().split()
    if args.only is not None:
        unknown = set(args.only) - set(tests)
        if unknown:
            raise SystemExit(f"not in TESTS: {' '.join(sorted(unknown))}")
        tests = [t for t in tests if t in args.only]
    unknown = set(expected) - set(tests)
    if unknown and args.only is None:
        raise SystemExit(f"{EXPECTED} names tests that do not exist: {' '.join(sorted(unknown))}")
    for t in NOT_RUN:
        if t in tests:
            print(f"not run: {t}: {NOT_RUN[t]}")
    tests = [t for t in tests if t not in NOT_RUN]
    Path("/proc/self/oom_score_adj").write_text("-1000")
    bindir = args.dir / "bin"
    t_start = time.monotonic()

    amd = run_all("kvm_amd", bindir, tests, args.timeout, args.logdir)

    for m in reversed(mods):  # dependents first
        r = sh("rmmod", module_name(m))
        if r.returncode:
            raise SystemExit(f"rmmod {module_name(m)}: {r.stderr}")
    mark = len(dmesg_lines())
    r = sh("insmod", ko, "as_kvm=1")
    if r.returncode:
        raise SystemExit(f"insmod {ko} as_kvm=1: {r.stderr}")
    port_tests = [t for t in tests if args.all_on_kvmport or amd[t].status != "timeout"]
    try:
        wait_node("/dev/kvm")
        port = run_all("kvmport", bindir, port_tests, args.timeout, args.logdir)
    finally:
        r = sh("rmmod", "kvmport")
        if r.returncode:
            print(f"rmmod kvmport failed: {r.stderr}", flush=True)
        for m in mods:
            sh("insmod", m)
    for t in tests:
        port.setdefault(t, Outcome("not run", None, 0.0))
    kernel = [ln for ln in dmesg_lines()[mark:] if any(b in ln for b in BAD_DMESG)]

    # the comparison
    unexpected: list[str] = []
    stale: list[str] = []
    print("\n| test | kvm_amd | kvmport | note |\n|---|---|---|---|")
    for t in tests:
        a, p = amd[t], port[t]
        note = ""
        if a.status == "pass" and p.status != "pass":
            if t in expected:
                note = expected[t]
            else:
                note = "UNEXPECTED"
                unexpected.append(t)
        elif t in expected and a.status == "pass":
            note = "STALE: listed but passes on both"
            stale.append(t)
        elif t in expected:
            note = f"(listed: {expected[t]}; not passing on kvm_amd here)"
        print(f"| {t} | {a.text()} | {p.text()} | {note} |")
    counts = {d: {s: sum(1 for o in res.values() if o.status == s) for s in
                  ("pass", "skip", "fail", "timeout", "not run")}
              for d, res in (("kvm_amd", amd), ("kvmport", port))}
    print(f"\ncounts: {json.dumps(counts)}; total {time.monotonic() - t_start:.0f} s")
    args.logdir.mkdir(parents=True, exist_ok=True)
    (args.logdir / "results.json").write_text(json.dumps(
        {t: {"kvm_amd": amd[t].__dict__, "kvmport": port[t].__dict__} for t in tests},
        indent=1))
    status = 0
    if unexpected:
        print(f"FAIL: pass on kvm_amd but not on kvmport, not in {EXPECTED.name}: "
              f"{' '.join(unexpected)} (logs in {args.logdir})", flush=True)
        status = 1
    if stale:
        print(f"FAIL: {EXPECTED.name} lists tests that pass on kvmport: {' '.join(stale)}",
              flush=True)
        status = 1
    if kernel:
        print("FAIL: kernel reports while kvmport ran:\n" + "\n".join(kernel), flush=True)
        status = 1
    if not status:
        print("selftests: kvmport passes every test kvm_amd passes, but the listed ones")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
