"""The VMX lab: Bochs 2.7 (Debian) emulating a Skylake-X with VT-x/EPT.

Bochs has no 9p and no direct kernel loading, so the lab builds:
  boot.img  FAT16 + syslinux: the lab kernel, a small initramfs (busybox and the
            ATA/ext4 modules) and syslinux.cfg -- ata0-master, booted by the BIOS;
  root.img  ext2 made with `mke2fs -d` (no mounting): busybox, the lab Python
            (venv + base interpreter + shared libraries, at their host paths), the
            kernel modules the run needs and a copy of the checkout at its host path
            (git-tracked and untracked-not-ignored files, plus build/lkm and
            build/lab/vmx) -- ata0-slave, which the initramfs mounts and switches to.
The console is COM1, written by Bochs to a file that the host follows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from lab.common import (
    BUILD,
    REPO,
    TOOLS_COMMON,
    TOOLS_VMX,
    LabError,
    ensure_packages,
    log,
    run,
)
from lab.kernel import LabKernel
from lab.pyenv import lab_python
from lab.runner import (
    GUEST_DIR,
    Outcome,
    RunDir,
    emulator_stopper,
    file_lines,
    make_rundir,
    start_emulator,
    watch_console,
)

BOCHS_CPU = "corei7_skylake_x"
# Instructions per emulated second (Bochs' notion of guest time with clock sync=none).
BOCHS_IPS = 200_000_000
# Modules the initramfs loads to reach the root disk (dependencies resolved from modules.dep).
ROOT_DISK_MODULES = ["ata_piix", "sd_mod", "crc32c_generic", "crc64_rocksoft_generic", "ext4"]
# Geometry unit of Bochs' flat ATA disks: heads 16 x 63 sectors of 512 bytes.
CYL_BYTES = 16 * 63 * 512

INITRAMFS_INIT = """#!/bin/busybox sh
# kvmport VMX lab initramfs: load the disk drivers, mount the root disk, switch to it.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "lab-init: loading the disk drivers"
for m in $(cat /modules.order); do insmod /modules/$m 2>/dev/null; done
i=0
while [ ! -b /dev/sdb ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 /dev/sdb /newroot; then
	echo "lab-init: cannot mount the root disk /dev/sdb"; ls /dev; poweroff -f
fi
mount --move /dev /newroot/dev
umount /proc /sys
echo "lab-init: root disk mounted"
exec switch_root /newroot /bin/sh /lab-init
"""

ROOT_INIT = """#!/bin/sh
# kvmport VMX lab: second stage on the root disk.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# /tmp stays on the root disk (a scratch copy made for this run): a tmpfs there would
# hide the checkout when it lives under /tmp, as a CI clone may.
mkdir -p /tmp && chmod 1777 /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
hostname kvmport-vmx-lab
sh {run_sh} {env_file}
sync
sleep 1
poweroff -f
"""


def _ldd_closure(binaries: list[Path]) -> set[Path]:
    """Shared libraries (as named by ldd) that the given ELF files need."""
    libs: set[Path] = set()
    for b in binaries:
        proc = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts:
                i = parts.index("=>")
                if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                    libs.add(Path(parts[i + 1]))
            elif parts and parts[0].startswith("/"):
                libs.add(Path(parts[0]))
    return libs


def _place(src: Path, root: Path, dest: Path | None = None) -> None:
    """Put src into root at its own absolute path (or dest): hard link if possible."""
    target = root / (dest or src).relative_to("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    real = src.resolve()
    try:
        os.link(real, target)
    except OSError:
        shutil.copy2(real, target)


# Tools the project's test code runs (bintest: binutils; pyhost.abi: `cc -E`).
GUEST_TOOLS = ("cc", "gcc", "cpp", "as", "ld", "objcopy", "nm", "objdump", "readelf")


def _toolchain_files() -> list[Path]:
    """The host's binutils and gcc's preprocessor (cc1), at their host paths."""
    files = [Path(p) for t in GUEST_TOOLS if (p := shutil.which(t))]
    if shutil.which("gcc"):
        cc1 = run(["gcc", "-print-prog-name=cc1"], capture=True).strip()
        if cc1.startswith("/"):
            files.append(Path(cc1))
        inc = Path(run(["gcc", "-print-file-name=include"], capture=True).strip())
        if inc.is_dir():
            files += [p for p in inc.rglob("*") if p.is_file()]
    return files


def _base_prefix(py: Path) -> Path:
    out = subprocess.run(
        [str(py), "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(out.strip())


def _python_files(py: Path) -> tuple[list[Path], list[Path]]:
    """(files, ELF files) of the lab Python: its venv and the base install it points to."""
    venv = py.parent.parent
    base = _base_prefix(py)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    skip_dirs = {
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "site-packages",
        "pydoc_data",
        "config-" + ver[6:] + "-x86_64-linux-gnu",
    }
    files: list[Path] = []
    stdlib = base / "lib" / ver
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for f in filenames:
            if f.endswith((".opt-1.pyc", ".opt-2.pyc")):
                continue
            files.append(Path(dirpath) / f)
    files += [p for p in (base / "lib").glob("libpython*.so*")]
    for name in ("python3", ver, "python"):
        if (base / "bin" / name).exists():
            files.append(base / "bin" / name)
    for dirpath, dirnames, filenames in os.walk(venv):
        dirnames[:] = [
            d
            for d in dirnames
            if d not in ("pip", "__pycache__") or not dirpath.endswith("site-packages")
        ]
        files += [Path(dirpath) / f for f in filenames]
    elves = [
        f
        for f in files
        if f.suffix == ".so"
        or ".so." in f.name
        or (
            f.parent.name == "bin"
            and f.is_file()
            and not f.is_symlink()
            and f.read_bytes()[:4] == b"\x7fELF"
        )
    ]
    return files, elves


# Not copied into the guest: VCS data, tool caches and build/ (kernel trees, lab disks);
# of build/ only build/lkm (the modules) goes in.
CHECKOUT_SKIP = {".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}


def _checkout_files() -> list[Path]:
    """Every file of the working tree, built products included (bintest/out, ABI module...)."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d not in CHECKOUT_SKIP and here / d != BUILD]
        files += [here / f for f in filenames if (here / f).is_file()]
    return files


def build_root(kernel: LabKernel, py: Path, rd: RunDir, kvm_modules: list[Path]) -> Path:
    """Stage the root tree and make root.img (ext2); return the image path."""
    out = rd.path
    stage = out / "root"
    if stage.exists():
        shutil.rmtree(stage)
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "mnt",
        "var/tmp",
    ):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/busybox", stage / "bin" / "busybox")
    applets = run(["/usr/bin/busybox", "--list-full"], capture=True).split()
    for a in applets:
        link = stage / a
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (stage / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc" / "group").write_text("root:x:0:\nkvm:x:993:\n")
    (stage / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (stage / "lab-init").write_text(
        ROOT_INIT.format(run_sh=GUEST_DIR / "run.sh", env_file=rd.env_file)
    )
    files, elves = _python_files(py)
    for f in files:
        if f.is_symlink() and f.resolve().is_relative_to(f.parent):
            target = stage / f.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() and not target.is_symlink():
                target.symlink_to(os.readlink(f))
        else:
            _place(f, stage)
    # The host's interpreter (sys.executable, often what COMMAND names) sees the
    # lab venv's packages too: mirror them into the base site-packages.
    venv_site = next((py.parent.parent / "lib").glob("python3*/site-packages"), None)
    base_site = (
        _base_prefix(py) / "lib" / venv_site.parent.name / "site-packages" if venv_site else None
    )
    if venv_site and base_site:
        for f in files:
            if f.is_relative_to(venv_site) and not f.is_symlink():
                _place(f, stage, base_site / f.relative_to(venv_site))
    tools = _toolchain_files()
    for t in tools:
        _place(t, stage)
    elves += [t for t in tools if t.suffix != ".h" and "include" not in t.parts]
    for lib in _ldd_closure(elves):
        _place(lib, stage)
    # The guest's loader is found at /lib64/ld-linux-x86-64.so.2.
    _place(Path("/lib64/ld-linux-x86-64.so.2"), stage)
    for f in _checkout_files():
        _place(f, stage)
    for f in (BUILD / "lkm").rglob("*.ko"):
        _place(f, stage)
    for f in (rd.env_file, rd.cmd_file):
        (stage / f.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, stage / f.relative_to("/"))
    for f in GUEST_DIR.iterdir():
        if f.is_file():
            _place(f, stage)
    for m in kvm_modules:
        _place(m, stage)
    size = int(
        run(["du", "-s", "--block-size=1", "--apparent-size", stage], capture=True).split()[0]
    )
    size = size * 13 // 10 + 96 * 1024 * 1024
    size = (size + CYL_BYTES - 1) // CYL_BYTES * CYL_BYTES
    img = out / "root.img"
    img.unlink(missing_ok=True)
    run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext2",
            "-L",
            "labroot",
            "-N",
            "60000",
            "-d",
            stage,
            img,
            f"{size // 1024}k",
        ],
        capture=True,
    )
    shutil.rmtree(stage)
    log(f"root disk {img.relative_to(REPO)}: {size // (1024 * 1024)} MiB")
    return img


def build_boot(kernel: LabKernel, append: str, out: Path) -> Path:
    """boot.img: FAT16 + syslinux with the lab kernel and the disk-driver initramfs."""
    ir = out / "initramfs"
    if ir.exists():
        shutil.rmtree(ir)
    for d in ("bin", "proc", "sys", "dev", "newroot", "modules"):
        (ir / d).mkdir(parents=True)
    shutil.copy2("/usr/bin/busybox", ir / "bin" / "busybox")
    (ir / "init").write_text(INITRAMFS_INIT)
    (ir / "init").chmod(0o755)
    order: list[str] = []
    for m in ROOT_DISK_MODULES:
        try:
            deps = kernel.module_deps(m)
        except LabError:
            continue
        for p in deps:
            if p.name not in order:
                order.append(p.name)
                shutil.copy2(p, ir / "modules" / p.name)
    (ir / "modules.order").write_text("\n".join(order) + "\n")
    initrd = out / "initrd.gz"
    files = run(["sh", "-c", "find . | sort"], cwd=ir, capture=True)
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input=files.encode(),
        cwd=ir,
        capture_output=True,
        check=True,
    ).stdout
    gz = subprocess.run(["gzip", "-1", "-n"], input=cpio, capture_output=True, check=True).stdout
    initrd.write_bytes(gz)
    shutil.rmtree(ir)
    cfg = out / "syslinux.cfg"
    cfg.write_text(
        f"DEFAULT lab\nPROMPT 0\nTIMEOUT 0\nLABEL lab\n  KERNEL vmlinuz\n"
        f"  APPEND initrd=initrd.gz {append}\n"
    )
    img = out / "boot.img"
    img.unlink(missing_ok=True)
    size = 32 * CYL_BYTES  # 16 MiB: kernel (8 MiB) + initramfs + room
    with img.open("wb") as f:
        f.truncate(size)
    run(["mkfs.fat", "-F", "16", "-n", "KVMPLAB", img], capture=True)
    run(["syslinux", "--install", img], capture=True)
    for src, name in ((kernel.vmlinuz, "vmlinuz"), (initrd, "initrd.gz"), (cfg, "syslinux.cfg")):
        run(["mcopy", "-o", "-i", img, src, f"::{name}"], capture=True)
    return img


def bochsrc(boot: Path, root: Path, serial: Path, memory_mb: int) -> str:
    def disk(path: Path) -> str:
        cyl = path.stat().st_size // CYL_BYTES
        return f'type=disk, path="{path}", mode=flat, cylinders={cyl}, heads=16, spt=63'

    return "\n".join(
        [
            f"megs: {memory_mb}",
            f"cpu: model={BOCHS_CPU}, count=1, ips={BOCHS_IPS}",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest",
            "vgaromimage: file=/usr/share/vgabios/vgabios.bin",
            "ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14",
            f"ata0-master: {disk(boot)}",
            f"ata0-slave: {disk(root)}",
            "boot: disk",
            "display_library: term",
            f"com1: enabled=1, mode=file, dev={serial}",
            "clock: sync=none, time0=local",
            f"log: {serial.parent / 'bochs.log'}",
            "panic: action=fatal",
            "error: action=report",
            "info: action=ignore",
            "debug: action=ignore",
            "",
        ]
    )


def _memory_mb(memory: str) -> int:
    m = memory.strip().upper()
    try:
        if m.endswith("G"):
            return int(float(m[:-1]) * 1024)
        return int(m.rstrip("MB") or 0)
    except ValueError:
        raise LabError(f"bad --memory {memory!r} (e.g. 1024M or 2G)") from None


def run_vmx(
    kernel: LabKernel,
    argv: list[str],
    *,
    memory: str,
    boot_timeout: float,
    timeout: float,
    verbose: bool,
    extra_env: dict[str, str],
    pip: str = "",
) -> tuple[Outcome, RunDir]:
    ensure_packages(TOOLS_COMMON + TOOLS_VMX)
    py = lab_python(pip)
    kvm_mods = kernel.module_deps("kvm_intel")
    rd = make_rundir("vmx", argv, kvm_modules=kvm_mods, python=py, extra_env=extra_env)
    log("building the VMX lab disks")
    boot = build_boot(
        kernel, "console=ttyS0,115200 quiet loglevel=4 panic=-1 tsc=reliable idle=poll", rd.path
    )
    root = build_root(kernel, py, rd, kvm_mods)
    serial = rd.path / "serial.out"
    serial.unlink(missing_ok=True)
    rc = rd.path / "bochsrc"
    rc.write_text(bochsrc(boot, root, serial, _memory_mb(memory)))
    dbg = rd.path / "bochs.rc"
    dbg.write_text("c\nquit\n")  # Debian's bochs has its debugger on: continue at once
    log(f"booting the VMX lab: {kernel.abi} under Bochs cpu={BOCHS_CPU} (slow: minutes)")
    with (rd.path / "bochs.stdout").open("w") as bout:
        proc = start_emulator("bochs", ["bochs", "-q", "-f", str(rc), "-rc", str(dbg)],
                              stdout=bout, stderr=subprocess.STDOUT, cwd=rd.path)
        drain_screen(rd.path / "bochs.stdout", proc)
        out = watch_console(
            file_lines(serial, lambda: proc.poll() is None),
            rd,
            boot_timeout=boot_timeout,
            timeout=timeout,
            verbose=verbose,
            stop=emulator_stopper(proc, grace=30),  # the guest powers off after the command
        )
    for big in (boot, root, rd.path / "initrd.gz", *rd.path.glob("*.img.lock")):
        big.unlink(missing_ok=True)  # hundreds of MiB a run; rebuilt every run anyway
    return out, rd


def drain_screen(bochs_stdout: Path, proc: subprocess.Popen[bytes]) -> threading.Thread:
    """Read and discard what Bochs's term display writes, in a daemon thread.

    With no terminal, the term display opens a pty of its own ("Bochs connected to
    screen /dev/pts/N") and writes the VGA screen there, cursor updates every second
    included. Nobody reads it: after some minutes the pty's buffer is full, Bochs blocks
    in write() and the whole machine stops -- the VMX lab "hang" at the third micro-guest
    test (2026-11-23; strace showed bochs-bin in write(5, "\\e[?25h", 4)).
    """

    def find_pty() -> str | None:
        # the master's fdinfo names the pty; bochs.stdout is block-buffered, so its
        # "connected to screen" line may come much later
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        for link in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                if os.readlink(link) != "/dev/ptmx":
                    continue
                info = (fd_dir.parent / "fdinfo" / link.name).read_text()
            except OSError:
                continue
            m = re.search(r"^tty-index:\s*(\d+)", info, re.M)
            if m:
                return f"/dev/pts/{m.group(1)}"
        m = re.search(
            r'connected to screen "?(/dev/pts/\d+)', bochs_stdout.read_text(errors="replace")
        )
        return m.group(1) if m else None

    def run() -> None:
        deadline = time.monotonic() + 600
        pts = None
        while pts is None and proc.poll() is None and time.monotonic() < deadline:
            pts = find_pty()
            if pts is None:
                time.sleep(0.2)
        if pts is None:
            return
        try:
            fd = os.open(pts, os.O_RDONLY | os.O_NOCTTY)
        except OSError:
            return
        try:
            tty.setraw(fd)  # no line discipline: every byte is readable at once
            while os.read(fd, 65536):
                pass
        except OSError:
            pass  # Bochs closed the pty: it has exited
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name="bochs-screen", daemon=True)
    t.start()
    return t

