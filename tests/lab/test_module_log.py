"""After a suite's guest runs: kvmport unloads, and the kernel said nothing bad meanwhile.

The lab suites (tests/lab/suite*.sh) note how long dmesg was before they loaded kvmport
($KVMPORT_DMESG_MARK) and run this file after the guests; every kernel line since then
is checked, whoever wrote it (the boot's own lines, e.g. Bochs's XSAVE warning, are not).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.lab.test_module import BAD_DMESG, SYSMOD

pytestmark = pytest.mark.lab


def test_unload_after_guests_leaves_a_clean_log() -> None:
    mark = os.environ.get("KVMPORT_DMESG_MARK")
    assert mark, "KVMPORT_DMESG_MARK is not set: run through tests/lab/suite*.sh"
    if SYSMOD.exists():
        subprocess.run(["rmmod", "kvmport"], check=True)
    lines = subprocess.run(["dmesg"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    new = lines[int(Path(mark).read_text()):]
    bad = [ln for ln in new if BAD_DMESG.search(ln)]
    assert not bad, "the kernel complained during the guest runs:\n" + "\n".join(bad)
    assert any("kvmport: loaded" in ln for ln in new), "kvmport was not loaded for the guests"
    assert any("kvmport: unloaded" in ln for ln in new), "no unload message"
    assert any("kvmport: no leaks" in ln for ln in new), "the module reported a leak"
