"""Run a command in a lab machine: run directory, console protocol, timeouts, dmesg, and
starting and stopping the emulator (QEMU for svm.py, Bochs for vmx.py)."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.common import LAB_BUILD, REPO, LabError, log

GUEST_DIR = Path(__file__).resolve().parent / "guest"
RULES = [REPO / "lkm" / "99-kvmport.rules"]

START = "@@KVMPORT-LAB-START@@"
DONE = "@@KVMPORT-LAB-DONE@@"
DMESG_BEGIN = "@@KVMPORT-LAB-DMESG-BEGIN@@"
DMESG_END = "@@KVMPORT-LAB-DMESG-END@@"
EXIT_RE = re.compile(r"@@KVMPORT-LAB-EXIT=(\d+)@@")
# Kernel messages that mean the guest kernel is dying: stop waiting.
FATAL_RE = re.compile(r"Kernel panic - not syncing|reboot: Power down|reboot: Restarting")


def command_script(argv: list[str]) -> str:
    """Shell text for COMMAND: one argument is a shell command line, several are an argv."""
    if not argv:
        raise LabError("no command given: invoke lab --cpu svm -- COMMAND...")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


@dataclass
class RunDir:
    """Files shared with the guest (the guest reads env.sh and cmd.sh)."""

    cpu: str
    path: Path

    @property
    def env_file(self) -> Path:
        return self.path / "env.sh"

    @property
    def cmd_file(self) -> Path:
        return self.path / "cmd.sh"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def dmesg(self) -> Path:
        return self.path / "dmesg.txt"


KEEP_RUNS = 10
DMESG_TAIL = 120  # dmesg lines printed when a run fails (the file has all)


def new_run_path(cpu: str) -> Path:
    """A run directory of its own (concurrent runs must not share env/cmd/console files).

    build/lab/<cpu>/<time>-<pid>/; build/lab/<cpu>/last points to the newest; only the
    newest KEEP_RUNS are kept.
    """
    base = LAB_BUILD / cpu
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir()
    last = base / "last"
    tmp = base / f".last-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    tmp.replace(last)
    runs = sorted(
        p
        for p in base.iterdir()
        if p.is_dir() and not p.is_symlink() and re.fullmatch(r"\d{8}-\d{6}-\d+", p.name)
    )
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def make_rundir(
    cpu: str,
    argv: list[str],
    *,
    kvm_modules: list[Path],
    python: Path,
    extra_env: dict[str, str] | None = None,
    path: str | None = None,
) -> RunDir:
    """Write env.sh/cmd.sh for a run; paths given are as the guest sees them (every lab
    has the checkout, lab/guest and the udev rules at their host paths)."""
    rd = RunDir(cpu=cpu, path=new_run_path(cpu))
    for f in (rd.console_log, rd.dmesg):
        f.unlink(missing_ok=True)
    guest_path = path or os.pathsep.join(
        [
            str(python.parent),
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
    )
    env = {
        "KVMPORT_LAB": cpu,
        "LAB_KVM_MODULES": " ".join(map(str, kvm_modules)),
        "LAB_CWD": str(REPO),
        "LAB_PYTHON": str(python),
        "LAB_UEVENTD": str(GUEST_DIR / "ueventd.py"),
        "LAB_RULES": " ".join(map(str, RULES)),
        "LAB_CMD": str(rd.cmd_file),
        "PATH": guest_path,
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAB_RNG_SEED": os.urandom(64).hex(),
        **(extra_env or {}),
    }
    rd.env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    rd.cmd_file.write_text(command_script(argv) + "\n")
    return rd


@dataclass
class Outcome:
    status: int | None = None  # COMMAND's exit status, None if it never finished
    boot_s: float | None = None  # host seconds until the command started
    run_s: float | None = None  # host seconds the command ran
    total_s: float = 0.0
    error: str | None = None
    dmesg: list[str] = field(default_factory=list)


def watch_console(
    lines: Iterator[str],
    rd: RunDir,
    *,
    boot_timeout: float,
    timeout: float,
    verbose: bool,
    stop: Callable[[bool], None],
) -> Outcome:
    """Stream the guest console: boot log only if verbose, command output always.

    lines yields console lines (a background thread feeds a queue so timeouts hold).
    """
    q: queue.Queue[str | None] = queue.Queue()

    def feed() -> None:
        try:
            for line in lines:
                q.put(line)
        finally:
            q.put(None)

    threading.Thread(target=feed, daemon=True).start()
    out = Outcome()
    t0 = time.monotonic()
    try:
        _follow(q, rd, out, t0, boot_timeout=boot_timeout, timeout=timeout, verbose=verbose)
    except BaseException:
        stop(False)  # Ctrl-C, SIGTERM (see run_lab) or a bug: never leave the emulator behind
        raise
    stop(out.status is not None)  # graceful only if the command finished
    out.total_s = time.monotonic() - t0
    if not out.dmesg and rd.console_log.exists():
        # The run did not finish: the kernel's console lines are the dmesg we have.
        kmsg = re.compile(r"^\[\s*\d+\.\d+\]")
        seen = [
            ln.partition("| ")[2] for ln in rd.console_log.read_text(errors="replace").splitlines()
        ]
        out.dmesg = ["# kernel messages seen on the console (the run did not finish)"]
        out.dmesg += [ln for ln in seen if kmsg.match(ln)]
    rd.dmesg.write_text("\n".join(out.dmesg) + "\n")
    return out


def _follow(
    q: queue.Queue[str | None],
    rd: RunDir,
    out: Outcome,
    t0: float,
    *,
    boot_timeout: float,
    timeout: float,
    verbose: bool,
) -> None:
    """The console loop of watch_console: fills out until the exit marker, EOF or a timeout."""
    started: float | None = None
    in_dmesg = False
    with rd.console_log.open("w", errors="replace") as con:
        while True:
            now = time.monotonic()
            if started is None and now - t0 > boot_timeout:
                out.error = (
                    f"timeout: the {rd.cpu} lab did not start the command within "
                    f"{boot_timeout:.0f} s (console: {rd.console_log})"
                )
                break
            if now - t0 > timeout:
                out.error = (
                    f"timeout: the {rd.cpu} lab run exceeded {timeout:.0f} s "
                    f"(raise it with --timeout; console: {rd.console_log})"
                )
                break
            try:
                line = q.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                if out.status is None:
                    out.error = (
                        f"the {rd.cpu} lab machine stopped before the command "
                        f"finished (console: {rd.console_log})"
                    )
                break
            line = line.replace("\r", "")
            # Host time since the emulator started, for finding where a run spends it.
            stamp = f"{time.monotonic() - t0:8.1f}s| "
            con.write(stamp + (line if line.endswith("\n") else line + "\n"))
            con.flush()
            text = line.rstrip("\n")
            if in_dmesg:
                if DMESG_END in text:
                    in_dmesg = False
                else:
                    out.dmesg.append(text)
                continue
            if START in text:
                started = time.monotonic()
                out.boot_s = started - t0
                log(f"{rd.cpu} lab booted in {out.boot_s:.1f} s; running the command")
                continue
            if DONE in text:
                out.run_s = time.monotonic() - (started or t0)
                continue
            if DMESG_BEGIN in text:
                in_dmesg = True
                continue
            m = EXIT_RE.search(text)
            if m:
                out.status = int(m.group(1))
                break
            if started is not None or verbose:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            if started is None and FATAL_RE.search(text):
                out.error = f"the {rd.cpu} lab kernel stopped during boot: {text.strip()}"
                break


def process_lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    yield from proc.stdout


def file_lines(path: Path, alive: Callable[[], bool]) -> Iterator[str]:
    """Follow a file that another process writes (like tail -f) while alive() holds."""
    while not path.exists():
        if not alive():
            return
        time.sleep(0.2)
    with path.open("r", errors="replace") as f:
        buf = ""
        while True:
            chunk = f.read(65536)
            if chunk:
                buf += chunk
                *complete, buf = buf.split("\n")
                for ln in complete:
                    yield ln + "\n"
                continue
            if not alive():
                rest = f.read()
                for ln in (buf + rest).splitlines():
                    yield ln + "\n"
                return
            time.sleep(0.2)


def start_emulator(what: str, cmd: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start the emulator in a process group of its own (stop_process ends it by that id)."""
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **popen)
    except OSError as exc:
        raise LabError(f"cannot start {what}: {exc}") from exc


def emulator_stopper(proc: subprocess.Popen[Any], grace: float) -> Callable[[bool], None]:
    """watch_console's `stop`: once the command finished, the guest powers off by itself
    (given `grace` seconds); otherwise, or if it does not, the emulator is stopped."""

    def stop(finished: bool) -> None:
        if finished:
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        stop_process(proc)

    return stop


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate the emulator we started (its own process group, by id), then reap it."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def report(out: Outcome, rd: RunDir) -> int:
    """Print the summary (and dmesg on failure); return the exit status for the shell."""
    times = []
    if out.boot_s is not None:
        times.append(f"boot {out.boot_s:.1f} s")
    if out.run_s is not None:
        times.append(f"command {out.run_s:.1f} s")
    times.append(f"total {out.total_s:.1f} s")
    if out.dmesg:
        log(f"guest dmesg saved to {rd.dmesg}")
    failed = out.error is not None or out.status != 0
    if failed and out.dmesg:
        shown = out.dmesg[-DMESG_TAIL:]
        skipped = len(out.dmesg) - len(shown)
        more = f" (last {len(shown)} lines; all {len(out.dmesg)} in {rd.dmesg})" if skipped else ""
        print(f"[lab] ---- guest dmesg{more} ----", file=sys.stderr)
        for ln in shown:
            print(ln, file=sys.stderr)
        print("[lab] ---- end of guest dmesg ----", file=sys.stderr)
    if out.error is not None:
        if not out.dmesg and rd.console_log.exists():
            tail = rd.console_log.read_text(errors="replace").splitlines()[-40:]  # stamped
            print("[lab] ---- last console lines ----", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
            print("[lab] ---- end of console lines ----", file=sys.stderr)
        log(f"ERROR: {out.error} ({', '.join(times)})")
        return 124 if out.error.startswith("timeout") else 125
    log(f"{rd.cpu} lab: command exited with status {out.status} ({', '.join(times)})")
    return out.status if out.status is not None else 125
