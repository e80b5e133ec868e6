"""Load kvmport.ko, check /dev/kvmport and KVM_GET_API_VERSION, unload. Needs root.

Usage: python module_check.py PATH/TO/kvmport.ko
Used by `invoke build-kext` (on the host when it can load modules, else in the lab).
"""

from __future__ import annotations

import fcntl
import grp
import os
import stat
import subprocess
import sys
import time

KVM_GET_API_VERSION = 0xAE00  # _IO(0xAE, 0x00)
NODE = "/dev/kvmport"


def main() -> int:
    ko = sys.argv[1]
    loaded = os.path.exists("/sys/module/kvmport")
    if loaded:
        subprocess.run(["rmmod", "kvmport"], check=True)
    subprocess.run(["insmod", ko], check=True)
    print(f"module_check: insmod {ko}: ok")
    try:
        deadline = time.monotonic() + 5
        st = os.stat(NODE)
        while time.monotonic() < deadline:
            st = os.stat(NODE)
            if _group(st.st_gid) == "kvm":
                break
            time.sleep(0.1)
        mode = stat.S_IMODE(st.st_mode)
        print(f"module_check: {NODE} mode {mode:04o} group {_group(st.st_gid)}")
        fd = os.open(NODE, os.O_RDWR)
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        finally:
            os.close(fd)
        print(f"module_check: KVM_GET_API_VERSION = {version}")
        ok = stat.S_ISCHR(st.st_mode) and mode == 0o660 and version == 12
        ok = ok and _group(st.st_gid) == "kvm"
    finally:
        if not loaded:
            subprocess.run(["rmmod", "kvmport"], check=True)
            print("module_check: rmmod kvmport: ok")
    print("module_check: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


if __name__ == "__main__":
    sys.exit(main())
