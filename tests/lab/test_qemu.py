"""QEMU on each --device, with the local APIC in QEMU (kernel-irqchip=off): the patched QEMU
(qemu-patches/, `invoke build-qemu`; its path comes in KVMPORT_QEMU, which `invoke test-lab`
and `invoke ci` set) boots bintest/bootfd.img through SeaBIOS and SYSLINUX to the self-check
on the light machine, and Debian's own kernel with two CPUs, both online (docs/qemu.md).

    KVMPORT_QEMU=$(invoke build-qemu) invoke lab --cpu svm -- 'insmod $KVMPORT_KO && \
        python3 -m pytest -q -p no:cacheprovider tests/lab/test_qemu.py \
        --device /dev/kvm --device /dev/kvmport'
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyhost.boot.fat import FatImage
from pyhost.ioctl import KEXT_NODE

from ..quirks import LAB, LAB_DIES_ON_KVM_AMD_TR_ROUND_TRIP
from .test_boot import BANNER, IMAGE, PROMPT, Boot

pytestmark = pytest.mark.lab

# QEMU's default machine (VGA, e1000, ...; SeaBIOS's VGA BIOS clears its window with
# REP STOSW, the framebuffer BAR needs dirty logging), serial console on stdio
DEFAULT_DEVICES = ["-machine", "pc,kernel-irqchip=off", "-nographic"]
# the light machine: no default devices, so no VGA (an MMIO exit per VGA write)
LIGHT = ["-machine", "pc,kernel-irqchip=off", "-nographic", "-nodefaults", "-serial", "stdio",
         "-vga", "none"]
HALTED = "reboot: System halted"  # bootfd's kernel has no ACPI: power-off is a halt
POWER_DOWN = "reboot: Power down"  # Debian's kernel powers off through ACPI: QEMU exits
# Debian's kernel without `quiet`: its SMP bring-up lines are the proof.  nolapic_timer
# keeps the PIT as the tick, so the init's timer check (IRQ 0 in /proc/interrupts) sees
# it tick (the local APIC timer would take over, on kvm_amd as on kvmport); the rest
# keeps the boot short (no speculation mitigations, no TSC checks, no floppy probe)
APPEND = ("console=ttyS0 nolapic_timer mitigations=off tsc=reliable reboot=t panic=-1 "
          "initcall_blacklist=floppy_init")


@pytest.fixture
def qemu() -> str:
    if LAB != "svm":
        pytest.skip("QEMU on a KVM device runs in the SVM lab")
    path = os.environ.get("KVMPORT_QEMU", "")
    assert path and os.access(path, os.X_OK), (
        f"KVMPORT_QEMU is not the patched QEMU ({path!r}): run `invoke build-qemu` and pass "
        "its path (invoke test-lab and invoke ci do)")
    return path


def accel(device: str) -> list[str]:
    return ["-accel", f"kvm,device={device}"]


def run_to(boot: Boot, end: str, timeout: float) -> tuple[str, str]:
    """Answer bootfd's input prompt, wait for `end` on the console, then stop QEMU."""
    try:
        if not boot.wait_for(BANNER, timeout):
            pytest.fail(f"no banner after {time.monotonic() - boot.started:.0f} s")
        if boot.wait_for(PROMPT, timeout):
            assert boot.proc.stdin is not None
            boot.proc.stdin.write(b"hello-serial\n")
            boot.proc.stdin.flush()
        if not boot.wait_for(end, timeout):
            pytest.fail(f"no {end!r} after {time.monotonic() - boot.started:.0f} s")
    except BaseException:
        boot.proc.kill()
        boot.close_input()
        boot.reader.join(5)
        boot.err_reader.join(5)
        print(f"console:\n{boot.text}\nstderr:\n{boot.err.decode(errors='replace')}")
        raise
    boot.close_input()
    try:
        boot.proc.wait(10)  # after an ACPI power-off QEMU exits by itself
    except Exception:
        boot.proc.terminate()
        boot.proc.wait(10)
    boot.reader.join(5)
    boot.err_reader.join(5)
    return boot.text, boot.err.decode(errors="replace")


def light_self_check(device: str, qemu: str) -> None:
    """bootfd.img on QEMU's light machine to its self-check PASS, console input included."""
    boot = Boot(device, argv=[qemu, *accel(device), *LIGHT, "-m", "128", "-snapshot",
                              "-fda", str(IMAGE)])
    out, err = run_to(boot, HALTED, 120)
    print(f"{device}: banner after {boot.seen[BANNER]:.1f} s, halted after "
          f"{boot.seen[HALTED]:.1f} s\n{err}")
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert "console input: 'hello-serial'" in out, out
    assert "check timer ok" in out and "check uptime ok" in out


def test_bootfd_self_check_under_qemu(device, qemu):
    light_self_check(device, qemu)


def test_bootfd_self_check_under_qemu_through_the_kext_abi(qemu):
    """The patched QEMU on the kext ABI (qemu-patches/0003, docs/qemu.md), which the module
    serves on /dev/kvmport-kext: every KVM ioctl in the envelope, VM and VCPU handles by
    open + ATTACH, the run area from KVMP_MMAP_VCPU.  The node speaks nothing else, so
    with abi=linux the same QEMU cannot even start, and a QEMU without the transport
    refuses the abi property."""
    assert os.path.exists(KEXT_NODE), f"{KEXT_NODE} is missing: is kvmport loaded?"
    for abi, refusal in (("linux", "kvm version too old"), ("bogus", "abi must be linux or kext")):
        r = subprocess.run([qemu, "-accel", f"kvm,device={KEXT_NODE},abi={abi}", *LIGHT,
                            "-m", "16"], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and refusal in r.stderr, (
            f"abi={abi} on {KEXT_NODE}: exit {r.returncode}, stderr:\n{r.stderr}\n"
            "(does KVMPORT_QEMU carry qemu-patches/0003, the kext-ABI transport?)")
    light_self_check(KEXT_NODE, qemu)  # the node's name chooses the kext ABI, as for pyhost


def test_bootfd_self_check_under_qemu_with_its_default_devices(device, qemu):
    boot = Boot(device, argv=[qemu, *accel(device), *DEFAULT_DEVICES, "-m", "128",
                              "-snapshot", "-fda", str(IMAGE)])
    out, err = run_to(boot, HALTED, 150)
    print(f"{device}: banner after {boot.seen[BANNER]:.1f} s, halted after "
          f"{boot.seen[HALTED]:.1f} s\n{err}")
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
    assert "check timer ok" in out and "check uptime ok" in out


def test_savevm_then_loadvm_goes_on_from_the_saved_point(device, qemu):
    """QEMU's savevm while the guest runs (dirty logging over all RAM, every VCPU state
    ioctl), the guest runs on to its power-off, then loadvm: it goes on from the saved
    point to a second self-check (lab/probes/qemu_savevm.py does the driving)."""
    if device == "/dev/kvm" and LAB_DIES_ON_KVM_AMD_TR_ROUND_TRIP:
        pytest.skip("kvm_amd's busy TR kills this lab's emulator (tests/quirks.py)")
    r = subprocess.run([sys.executable, "-m", "lab.probes.qemu_savevm", "150", qemu, device,
                        "savevm"], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, TMPDIR="/tmp"))
    print(r.stdout[-3000:], r.stderr[-2000:])
    assert r.returncode == 0 and "second self-check PASS" in r.stdout, r.stdout[-3000:]


def test_debian_kernel_brings_up_two_cpus_under_qemu(device, qemu, tmp_path: Path):
    """-smp 2 with QEMU's userspace local APIC: SeaBIOS counts the CPUs (INIT/SIPI through
    QEMU's APIC, MP state RUNNABLE), then the guest kernel starts its second CPU itself."""
    vmlinuz = Path(os.environ.get("KVMPORT_LAB_VMLINUZ", ""))
    assert vmlinuz.is_file(), f"the lab kernel's vmlinuz is missing: {vmlinuz}"
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(FatImage.from_disk(IMAGE.read_bytes()).read_file("/initrd.gz"))
    boot = Boot(device, argv=[qemu, *accel(device), *LIGHT, "-smp", "2", "-m", "256",
                              "-kernel", str(vmlinuz), "-initrd", str(initrd),
                              "-append", APPEND])
    out, err = run_to(boot, POWER_DOWN, 300)
    print(f"{device}: banner after {boot.seen[BANNER]:.1f} s, power-off after "
          f"{boot.seen[POWER_DOWN]:.1f} s\n{err}")
    assert "smp: Brought up 1 node, 2 CPUs" in out, f"console:\n{out}\nstderr:\n{err}"
    assert "self-check PASS" in out, f"console:\n{out}\nstderr:\n{err}"
