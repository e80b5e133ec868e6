"""Boot loader configs: SYSLINUX/EXTLINUX (syslinux.cfg, extlinux.conf) and GRUB legacy menu.lst.

    entry = find_boot_entry(FatImage(image_bytes))  # the default entry
    entry.kernel, entry.initrd, entry.cmdline       # "/vmlinuz", "/initrd.gz", "console=..."

Only what an unattended boot needs: the default (or a named) entry's kernel, initrd(s) and
command line.  Paths come back absolute, resolved against the config file's directory.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pyhost.boot import BootError

SYSLINUX_PATHS = (
    "/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/extlinux.conf",
    "/extlinux/extlinux.conf",
    "/boot/extlinux/extlinux.conf",
)
GRUB_PATHS = ("/boot/grub/menu.lst", "/grub/menu.lst", "/menu.lst")
CONFIG_PATHS = SYSLINUX_PATHS + GRUB_PATHS

# SYSLINUX kernel-like keywords that do not boot a Linux kernel.
NOT_LINUX = {"localboot", "boot", "bss", "pxe", "fdimage", "comboot", "com32", "config"}
NOT_LINUX_EXT = {".c32", ".cbt", ".com", ".bs", ".bss", ".0", ".img", ".cfg", ".conf"}
MAX_INCLUDE_DEPTH = 8


class FileSource(Protocol):
    """What the config reader needs from a filesystem (FatImage fits)."""

    def read_file(self, path: str) -> bytes: ...

    def is_file(self, path: str) -> bool: ...


@dataclass
class BootEntry:
    """One bootable entry: a Linux kernel, its initrd(s) and its command line."""

    label: str
    kernel: str
    initrds: list[str] = field(default_factory=list)
    cmdline: str = ""
    config: str = ""  # the config file it came from

    @property
    def initrd(self) -> str | None:
        return self.initrds[0] if self.initrds else None


@dataclass
class _Label:
    name: str
    kernel: str | None = None
    kind: str = "kernel"
    append: str | None = None
    initrds: list[str] | None = None
    menu_default: bool = False


def _resolve(path: str, base: str) -> str:
    path = path.strip().replace("\\", "/")
    # GRUB legacy device prefix: (hd0,0)/boot/vmlinuz
    path = re.sub(r"^\([^)]*\)", "", path)
    if not path:
        raise BootError("empty path in boot config")
    joined = path if path.startswith("/") else posixpath.join(base, path)
    return posixpath.normpath(joined).replace("//", "/")


def _split_initrd(args: str, base: str) -> tuple[list[str], str]:
    """Take initrd=A[,B] out of an APPEND line: (initrd paths, remaining command line)."""
    initrds: list[str] = []
    rest: list[str] = []
    for tok in args.split():
        if tok.lower().startswith("initrd="):
            initrds += [_resolve(p, base) for p in tok[7:].split(",") if p]
        else:
            rest.append(tok)
    return initrds, " ".join(rest)


def _syslinux_lines(
    text: str, base: str, read: Callable[[str], str] | None, depth: int = 0
) -> list[tuple[str, str]]:
    """(keyword, argument) pairs, lower-case keywords, INCLUDE expanded, TEXT blocks skipped."""
    if depth > MAX_INCLUDE_DEPTH:
        raise BootError(f"boot config: INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}")
    out: list[tuple[str, str]] = []
    in_text = False
    for raw in text.splitlines():
        line = raw.strip()
        if in_text:
            if line.lower() == "endtext":
                in_text = False
            continue
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        key = parts[0].lower()
        arg = parts[1].strip() if len(parts) > 1 else ""
        if key == "menu":  # MENU LABEL x, MENU DEFAULT, MENU INCLUDE f, ...
            sub = arg.split(None, 1)
            key = "menu " + (sub[0].lower() if sub else "")
            arg = sub[1].strip() if len(sub) > 1 else ""
        if key == "text" and arg.lower() == "help":
            in_text = True
            continue
        if key in ("include", "menu include"):
            if read is not None and arg:
                inc = _resolve(arg.split()[0], base)
                out += _syslinux_lines(read(inc), base, read, depth + 1)
            continue
        out.append((key, arg))
    return out


@dataclass
class SyslinuxConfig:
    labels: dict[str, _Label]  # by lower-case name, in file order
    default: str | None  # the DEFAULT argument
    global_append: str | None
    base: str

    def entry(self, label: str | None = None, config: str = "") -> BootEntry:
        """The entry for `label`, else MENU DEFAULT, else DEFAULT, else the first label."""
        if label is None:
            menu_default = [lb for lb in self.labels.values() if lb.menu_default]
            if menu_default:
                return self._entry(menu_default[0], config)
            if self.default is None:
                if not self.labels:
                    raise BootError(f"boot config {config}: no LABEL and no DEFAULT")
                return self._entry(next(iter(self.labels.values())), config)
            label = self.default
        name = label.split()[0] if label.split() else ""
        found = self.labels.get(name.lower())
        if found is not None:
            extra = label[len(name) :].strip()
            entry = self._entry(found, config)
            if extra:
                entry.cmdline = f"{entry.cmdline} {extra}".strip()
            return entry
        if label == self.default and name:
            # DEFAULT names no label: SYSLINUX treats it as "kernel [options]".
            initrds, cmdline = _split_initrd(label[len(name) :], self.base)
            if self.global_append and self.global_append != "-":
                more_initrds, more = _split_initrd(self.global_append, self.base)
                initrds = initrds or more_initrds
                cmdline = f"{more} {cmdline}".strip()
            return BootEntry(name, _resolve(name, self.base), initrds, cmdline, config)
        raise BootError(f"boot config {config}: no label {label!r}")

    def _entry(self, lb: _Label, config: str) -> BootEntry:
        if lb.kind in NOT_LINUX:
            raise BootError(
                f"boot config {config}: label {lb.name!r} is {lb.kind.upper()}, not a Linux kernel"
            )
        if not lb.kernel:
            raise BootError(f"boot config {config}: label {lb.name!r} has no KERNEL/LINUX")
        kernel_file = lb.kernel.split()[0]
        if lb.kind == "kernel" and posixpath.splitext(kernel_file.lower())[1] in NOT_LINUX_EXT:
            raise BootError(
                f"boot config {config}: label {lb.name!r} runs {kernel_file}, not a Linux kernel"
            )
        append = lb.append if lb.append is not None else self.global_append
        if append == "-":
            append = None
        initrds, cmdline = _split_initrd(append or "", self.base)
        # Options given on the KERNEL line itself come first.
        inline = " ".join(lb.kernel.split()[1:])
        if inline:
            more_initrds, inline = _split_initrd(inline, self.base)
            initrds = more_initrds + initrds
            cmdline = f"{inline} {cmdline}".strip()
        if lb.initrds is not None:
            initrds = lb.initrds + initrds
        return BootEntry(lb.name, _resolve(kernel_file, self.base), initrds, cmdline, config)


def parse_syslinux(
    text: str, config_path: str = "/syslinux.cfg", read: Callable[[str], str] | None = None
) -> SyslinuxConfig:
    """Parse a syslinux.cfg/extlinux.conf; `read(path)` serves INCLUDE (skipped without it)."""
    base = posixpath.dirname(config_path) or "/"
    labels: dict[str, _Label] = {}
    default: str | None = None
    global_append: str | None = None
    current: _Label | None = None
    for key, arg in _syslinux_lines(text, base, read):
        if key == "label":
            if not arg:
                raise BootError(f"boot config {config_path}: LABEL without a name")
            current = _Label(arg)
            labels.setdefault(arg.lower(), current)
        elif key == "default":
            default = arg or None
        elif key in ("kernel", "linux", *NOT_LINUX):
            if current is None:
                continue  # a KERNEL outside a label is ignored, as SYSLINUX does
            current.kernel = arg
            current.kind = "kernel" if key in ("kernel", "linux") else key
            if key == "localboot":
                current.kernel = current.kernel or "0"
        elif key == "append":
            if current is None:
                global_append = arg
            else:
                current.append = arg
        elif key == "initrd":
            if current is not None:
                current.initrds = [_resolve(p, base) for p in arg.split(",") if p.strip()]
        elif key == "menu default":
            if current is not None:
                current.menu_default = True
    return SyslinuxConfig(labels, default, global_append, base)


def parse_menu_lst(
    text: str, entry: int | None = None, config_path: str = "/boot/grub/menu.lst"
) -> BootEntry:
    """The `entry`-th (default: the `default N`-th) entry of a GRUB legacy menu.lst."""
    entries: list[dict[str, str | list[str]]] = []
    default = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_]+)\s*(?:=\s*|\s+|$)(.*)$", line)
        if not m:
            continue
        key, arg = m.group(1).lower(), m.group(2).strip()
        if key == "title":
            entries.append({"title": arg, "initrds": []})
        elif key == "default" and not entries:
            if arg.isdigit():
                default = int(arg)
            elif arg != "saved":
                raise BootError(f"boot config {config_path}: bad 'default {arg}'")
        elif entries and key == "kernel":
            toks = [t for t in arg.split() if not t.startswith("--")]
            if not toks:
                raise BootError(f"boot config {config_path}: 'kernel' without a path")
            entries[-1]["kernel"] = toks[0]
            entries[-1]["cmdline"] = " ".join(toks[1:])
        elif entries and key == "initrd":
            toks = arg.split()
            if toks:
                initrds = entries[-1]["initrds"]
                assert isinstance(initrds, list)
                initrds.append(toks[0])
    if not entries:
        raise BootError(f"boot config {config_path}: no 'title' entries")
    idx = default if entry is None else entry
    if not 0 <= idx < len(entries):
        raise BootError(f"boot config {config_path}: entry {idx} requested, {len(entries)} defined")
    chosen = entries[idx]
    if "kernel" not in chosen:
        raise BootError(f"boot config {config_path}: entry {chosen['title']!r} has no kernel")
    base = "/"
    kernel = chosen["kernel"]
    cmdline = chosen.get("cmdline", "")
    initrds = chosen["initrds"]
    assert isinstance(kernel, str) and isinstance(cmdline, str) and isinstance(initrds, list)
    return BootEntry(
        str(chosen["title"]),
        _resolve(kernel, base),
        [_resolve(p, base) for p in initrds],
        cmdline,
        config_path,
    )


def find_config(fs: FileSource) -> str:
    """The first boot config present on `fs`, in CONFIG_PATHS order."""
    for path in CONFIG_PATHS:
        if fs.is_file(path):
            return path
    raise BootError(
        "no boot loader config on the image (looked for " + ", ".join(CONFIG_PATHS) + ")"
    )


def find_boot_entry(fs: FileSource, label: str | None = None) -> BootEntry:
    """The entry to boot from `fs`: `label` (a SYSLINUX label or GRUB entry number) or the
    default; its kernel and initrds are checked to exist on `fs`."""
    path = find_config(fs)

    def read(p: str) -> str:
        return fs.read_file(p).decode("latin-1")

    if path in GRUB_PATHS:
        if label is not None and not label.isdigit():
            raise BootError(f"boot config {path}: GRUB entries are chosen by number, not {label!r}")
        entry = parse_menu_lst(read(path), int(label) if label is not None else None, path)
    else:
        entry = parse_syslinux(read(path), path, read).entry(label, path)
    for f in (entry.kernel, *entry.initrds):
        if not fs.is_file(f):
            raise BootError(
                f"boot config {path}: entry {entry.label!r} names {f}, not on the image"
            )
    return entry
