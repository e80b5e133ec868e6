"""Minimal udev stand-in for the lab: apply GROUP/MODE/OWNER of udev rules to new nodes.

Usage: python ueventd.py RULES_FILE...

Understands rule lines made of KERNEL=="name" (glob), SUBSYSTEM=="x" matches and
GROUP="g", OWNER="u", MODE="0660" assignments, which is all the project's rules use.
Listens on the kernel's uevent netlink socket and, for every "add" event whose
device node matches, applies the assignments to /dev/<DEVNAME>.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import socket
import sys

NETLINK_KOBJECT_UEVENT = 15
READY = "/tmp/lab-ueventd.ready"
PAIR = re.compile(r'\s*([A-Z_]+)\s*(==|=)\s*"([^"]*)"\s*,?')


def parse_rules(paths: list[str]) -> list[tuple[dict[str, str], dict[str, str]]]:
    rules = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                match: dict[str, str] = {}
                assign: dict[str, str] = {}
                for key, op, val in PAIR.findall(line):
                    (match if op == "==" else assign)[key] = val
                rules.append((match, assign))
    return rules


def apply(rules: list[tuple[dict[str, str], dict[str, str]]], ev: dict[str, str]) -> None:
    name = ev.get("DEVNAME")
    if ev.get("ACTION") != "add" or not name:
        return
    kernel = os.path.basename(ev.get("DEVPATH", name))
    for match, assign in rules:
        if "KERNEL" in match and not fnmatch.fnmatch(kernel, match["KERNEL"]):
            continue
        if "SUBSYSTEM" in match and ev.get("SUBSYSTEM") != match["SUBSYSTEM"]:
            continue
        node = "/dev/" + name
        uid = pwd.getpwnam(assign["OWNER"]).pw_uid if "OWNER" in assign else -1
        gid = grp.getgrnam(assign["GROUP"]).gr_gid if "GROUP" in assign else -1
        os.chown(node, uid, gid)
        if "MODE" in assign:
            os.chmod(node, int(assign["MODE"], 8))
        print(f"lab-ueventd: {node} {assign}", file=sys.stderr, flush=True)


def main() -> None:
    rules = parse_rules(sys.argv[1:])
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sock.bind((os.getpid(), 1))
    open(READY, "w").close()
    while True:
        data = sock.recv(65536)
        fields = data.split(b"\0")
        ev = {}
        for f in fields[1:]:
            k, sep, v = f.decode(errors="replace").partition("=")
            if sep:
                ev[k] = v
        try:
            apply(rules, ev)
        except (OSError, KeyError) as exc:
            print(f"lab-ueventd: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
