"""Guest RAM that a device pins for as long as the guest uses it (kvmport does; Linux's KVM
pins nothing) must follow the kernel's rules for long-term pins: the pins count against
the process's RLIMIT_MEMLOCK (VmPin in /proc/PID/status) unless it has CAP_IPC_LOCK, and
file-backed shared mappings whose filesystem tracks dirty pages are not pinned. On
Linux's KVM neither applies: the same sequences run, and the test says where the devices
differ on purpose (docs/driver.md, "Security")."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bintest.build import build, mode_of
from pyhost import Cap, IoIn, IoOut, Kvm, KvmError
from pyhost.raw import RawGuest, load_raw

from .test_dirty_log import WRITE, access

GUEST = "dirty_log_real"
LOW_RAM = 0x80000  # slot 0; the guest addresses pages below 1 MiB (real mode)
SLOT1_PAGE, SLOT1_SIZE = 0x80, 0x20000  # slot 1 at 512 KiB
LIMIT_PAGES = 16  # the low RLIMIT_MEMLOCK the child sets
TOUCHED = range(0x10, 0x40)  # the pages the guest writes (its code is in page 8)
CAP_IPC_LOCK = 14
REPO = Path(__file__).resolve().parents[2]


def pins_pages(kvm: Kvm) -> bool:
    """kvmport (the device with KVM_MMAP_VCPU) pins guest RAM; Linux's KVM does not."""
    return bool(kvm.check_extension(Cap.MMAP_VCPU))


def vm_pinned_pages() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPin:"):
            return int(line.split()[1]) // 4
    raise AssertionError("no VmPin in /proc/self/status")


def drop_cap_ipc_lock() -> None:
    """Take CAP_IPC_LOCK out of this process's effective and permitted sets (capset(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # {effective, permitted, inheritable} x 2 words
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0] &= ~(1 << CAP_IPC_LOCK)
    data[1] &= ~(1 << CAP_IPC_LOCK)
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def finish_write(g: RawGuest) -> None:
    """The guest's write that KVM_RUN failed on completes when it runs again."""
    ex = g.vcpu.run()
    assert ex == IoOut(0x70, 1, 1, bytes([WRITE])), ex


def become_user(device: str) -> None:
    """Become user nobody in the device node's group (no capability left)."""
    gid = os.stat(device).st_gid
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(65534)


def memlock_run(device: str, who: str) -> dict[str, Any]:
    """In this (forked) process, as `who` ("root", "root-without-cap": CAP_IPC_LOCK
    dropped, "user": nobody in the device's group), with RLIMIT_MEMLOCK's soft limit at
    LIMIT_PAGES pages: the guest writes TOUCHED; what happened."""
    image = build(GUEST).read_bytes()  # while the checkout's build/ is still ours
    if who == "root-without-cap":
        drop_cap_ipc_lock()
    elif who == "user":
        become_user(device)
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (LIMIT_PAGES * 4096, hard))
    out: dict[str, Any] = {"errno": None}
    with Kvm(device) as kvm:
        g = load_raw(kvm, image, mode_of(GUEST), memory=LOW_RAM)
        for page in TOUCHED:
            try:
                assert access(g, page, WRITE) == []
            except KvmError as e:
                out.update(errno=e.errno, page=page, pinned_at_error=vm_pinned_pages(),
                           message=str(e))
                try:  # defined and repeatable: the same error again, no hang
                    g.vcpu.run()
                except KvmError as again:
                    out["errno_again"] = again.errno
                # a larger limit lets the guest go on where it stopped
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
                finish_write(g)
        out["written"] = all(g.vm.read(p * 4096, 1) == b"\x5a" for p in TOUCHED)
        out["pinned_at_end"] = vm_pinned_pages()
        g.close()
    out["pinned_after_close"] = vm_pinned_pages()
    return out


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args) in a forked child (its limits and capabilities die with it); its result."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        try:
            result: dict[str, Any] = {"ok": fn(*args)}
        except BaseException as e:  # everything goes back to the parent
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(wfd, json.dumps(result).encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return dict(result["ok"])


def check_memlock_outcome(kvm: Kvm, r: dict[str, Any]) -> None:
    pins = pins_pages(kvm)
    assert r["written"]
    if not pins:  # Linux's KVM: no pin, no limit
        assert r["errno"] is None and r["pinned_at_end"] == 0, r
        return
    # kvmport: KVM_RUN fails with ENOMEM at the pin past the limit (the code page and
    # LIMIT_PAGES - 1 written pages are pinned), again if run again, and the guest goes
    # on once the limit allows; every pin is given back with the VM
    assert r["errno"] == errno.ENOMEM and r["errno_again"] == errno.ENOMEM, r
    assert r["pinned_at_error"] == LIMIT_PAGES, r
    assert r["page"] == TOUCHED[LIMIT_PAGES - 1], r
    assert "ulimit -l" in r["message"], r
    assert r["pinned_at_end"] == len(TOUCHED) + 1, r
    assert r["pinned_after_close"] == 0, r


def test_pins_count_against_rlimit_memlock_without_cap_ipc_lock(kvm, device):
    check_memlock_outcome(kvm, in_child(memlock_run, device, "root-without-cap"))


def test_cap_ipc_lock_lifts_the_limit_as_for_every_pinner(kvm, device):
    """Root's CAP_IPC_LOCK (QEMU or pyhost as root, the labs) bypasses the limit, so
    they run unchanged; the pins are still counted in VmPin."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CAP_IPC_LOCK)")
    r = in_child(memlock_run, device, "root")
    assert r["errno"] is None and r["written"], r
    assert r["pinned_at_end"] == (len(TOUCHED) + 1 if pins_pages(kvm) else 0), r
    assert r["pinned_after_close"] == 0, r


def fs_type(path: Path) -> str:
    """The type of the filesystem that holds path (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount, fstype = fields[4], fields[fields.index("-") + 1]
        if (str(path) + "/").startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def guest_with_shared_slot(raw_guest, fd: int) -> tuple[RawGuest, mmap.mmap]:
    """dirty_log_real with slot 1 at SLOT1_PAGE: a MAP_SHARED mapping of fd."""
    os.ftruncate(fd, SLOT1_SIZE)
    m = mmap.mmap(fd, SLOT1_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    g = raw_guest(GUEST, memory=LOW_RAM)
    address = ctypes.addressof(ctypes.c_char.from_buffer(m))
    g.vm.set_user_memory_region(1, SLOT1_PAGE * 4096, SLOT1_SIZE, address)
    return g, m


def test_shmem_backed_shared_slot_is_guest_ram_on_every_device(raw_guest):
    """memfd (shmem), as QEMU's memory-backend-memfd and share=on use: pinnable."""
    fd = os.memfd_create("kvmport-test")
    try:
        g, m = guest_with_shared_slot(raw_guest, fd)
        assert access(g, SLOT1_PAGE + 1, WRITE) == []
        assert os.pread(fd, 1, 4096) == b"\x5a"  # the file's page is the guest's page
        g.vm.set_user_memory_region(1, SLOT1_PAGE * 4096, 0, 0)
        del m
    finally:
        os.close(fd)


def shared_mmap_works(where: Path) -> bool:
    probe = where / f"mmap-probe-{os.getpid()}"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 4096)
        mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def writeback_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem with writeback that takes writable shared mappings:
    the checkout's build/ (ext4 on the build machine), else (the SVM lab's build/ is 9p
    without a cache, which refuses them) a small ext4 on a loop device."""
    build_dir = REPO / "build"
    build_dir.mkdir(exist_ok=True)
    if fs_type(build_dir) not in ("tmpfs", "hugetlbfs", "ramfs", "9p", "") and \
            shared_mmap_works(build_dir):
        yield build_dir
        return
    image, mnt = tmp_path / "ext4.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "8M"], check=True)
    subprocess.run(["modprobe", "loop"], check=True)  # the lab loads no module unasked
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        assert fs_type(mnt) == "ext4" and shared_mmap_works(mnt)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_file_backed_shared_slot(kvm, writeback_dir, raw_guest):
    """A MAP_SHARED mapping of a file on a filesystem with writeback (page cache the
    filesystem tracks dirty pages of): Linux's KVM maps it (it pins nothing and follows
    the mapping through its MMU notifier); kvmport refuses the long-term pin, as the
    kernel's long-term pinners do, and KVM_RUN fails with EFAULT at the guest's access,
    as it does on Linux's KVM for memory it cannot map."""
    kind = fs_type(writeback_dir)
    path = writeback_dir / f"guest-ram-{os.getpid()}.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    g, m = guest_with_shared_slot(raw_guest, fd)
    try:
        if not pins_pages(kvm):
            assert access(g, SLOT1_PAGE + 1, WRITE) == []
            m.flush()
            assert os.pread(fd, 1, 4096) == b"\x5a"
            return
        ex = g.vcpu.run()
        assert isinstance(ex, IoIn) and ex.port == 0x71, ex
        ex.data[:2] = (SLOT1_PAGE + 1).to_bytes(2, "little")
        ex = g.vcpu.run()
        assert isinstance(ex, IoIn) and ex.port == 0x72, ex
        ex.data[0] = WRITE
        for _ in range(2):  # the same answer each time: no hang, no partial write
            try:
                g.vcpu.run()
                raise AssertionError(f"KVM_RUN went on with a file on {kind} as guest RAM")
            except KvmError as e:  # not pytest.raises: its traceback would keep m alive
                assert e.errno == errno.EFAULT, (kind, e)
        assert os.pread(fd, 1, 4096) == b"\0"
    finally:
        g.close()  # the VM and the mapping go before the filesystem is unmounted
        m.close()
        os.close(fd)
        path.unlink()
