"""Every SVM and VMX instruction in the Linux module has an exception-table entry, so a
fault there (virtualization turned off on the CPU under kvmport: a reboot, an emergency
restart, kexec or crash path, another module) resumes at kvmport's fixup instead of
oopsing the host (core/kvmp_os.h, KVMP_EXTABLE; docs/driver.md, "Security").

Builds lkm/ against the lab kernel's headers (as `invoke build-kext --no-load`), then reads
kvmport.ko with objdump: the instructions from the disassembly, the entries' `from`
addresses from the relocations of __ex_table (Linux 6.1: 12-byte entries, insn, fixup,
data; insn and fixup relative, each one PC32 relocation against its section).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lab.main import lab_kernel_headers
from lab.module import build_module

# what the backends use: kvmp_svm_enter, svm_run, the VMX instruction wrappers, kvmp_vmx_enter
VIRT_INSNS = {"vmrun", "vmload", "vmsave", "clgi", "stgi",
              "vmxon", "vmxoff", "vmptrld", "vmclear", "vmread", "vmwrite",
              "invept", "invvpid", "vmlaunch", "vmresume"}
ENTRY_SIZE = 12


@pytest.fixture(scope="module")
def module() -> Path:
    return build_module(lab_kernel_headers(), quiet=True)


def objdump(*args: str) -> str:
    return subprocess.run(["objdump", *args], capture_output=True, text=True,
                          check=True).stdout


def virt_insns(ko: Path) -> list[tuple[str, int, str]]:
    """(section, offset, mnemonic) of each virtualization instruction in ko."""
    found, section = [], ""
    for line in objdump("-d", "-w", str(ko)).splitlines():
        if m := re.match(r"Disassembly of section (\S+):", line):
            section = m.group(1)
        elif m := re.match(r"\s*([0-9a-f]+):\t[0-9a-f ]+\t(\w+)", line):
            if m.group(2) in VIRT_INSNS:
                found.append((section, int(m.group(1), 16), m.group(2)))
    return found


def extable_from(ko: Path) -> set[tuple[str, int]]:
    """(section, offset) of each exception-table entry's faulting instruction."""
    entries = set()
    for line in objdump("-r", "-j", "__ex_table", str(ko)).splitlines():
        m = re.match(r"([0-9a-f]+)\s+R_X86_64_PC32\s+(\S+?)(?:\+0x([0-9a-f]+))?$", line)
        if not m:
            continue
        offset = int(m.group(1), 16)
        assert offset % ENTRY_SIZE in (0, 4), f"not a 12-byte entry layout: {line}"
        if offset % ENTRY_SIZE == 0:
            entries.add((m.group(2), int(m.group(3) or "0", 16)))
    return entries


def test_every_virtualization_instruction_has_an_exception_table_entry(module: Path) -> None:
    insns = virt_insns(module)
    assert {name for _, _, name in insns} == VIRT_INSNS, \
        "the module should hold every SVM and VMX instruction the backends use"
    entries = extable_from(module)
    missing = [f"{name} at {section}+{offset:#x}" for section, offset, name in insns
               if (section, offset) not in entries]
    assert not missing, "no exception-table entry for: " + ", ".join(missing)
