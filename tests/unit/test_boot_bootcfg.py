"""pyhost.boot.bootcfg: SYSLINUX/EXTLINUX and GRUB legacy configs, and the lookup on an image."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhost.boot import BootError
from pyhost.boot.bootcfg import (
    BootEntry,
    find_boot_entry,
    find_config,
    parse_menu_lst,
    parse_syslinux,
)
from pyhost.boot.fat import FatImage
from pyhost.boot.fatbuild import build_fat_image

ROOT = Path(__file__).resolve().parents[2]

SYSLINUX_CFG = """\
# comment
serial 0 115200
Prompt 1
TIMEOUT 50
default Linux

label rescue
  kernel /boot/rescue.img

LABEL linux
  MENU LABEL ^Linux
  TEXT HELP
    kernel /not/this
  ENDTEXT
  Kernel vmlinuz
  APPEND initrd=initrd.gz,extra.cpio console=ttyS0 root=/dev/ram0   quiet

label   nofs
  LINUX /boot/bzImage panic=1
  INITRD /boot/rd.gz
  append console=ttyS0

label local
  localboot 0

label menu
  kernel menu.c32
"""


def test_syslinux_default_label_is_case_insensitive() -> None:
    e = parse_syslinux(SYSLINUX_CFG, "/syslinux/syslinux.cfg").entry()
    assert e == BootEntry(
        "linux",
        "/syslinux/vmlinuz",
        ["/syslinux/initrd.gz", "/syslinux/extra.cpio"],
        "console=ttyS0 root=/dev/ram0 quiet",
        "",
    )
    assert e.initrd == "/syslinux/initrd.gz"


def test_syslinux_named_labels() -> None:
    cfg = parse_syslinux(SYSLINUX_CFG)
    e = cfg.entry("NOFS")
    assert (e.kernel, e.initrds, e.cmdline) == (
        "/boot/bzImage",
        ["/boot/rd.gz"],
        "panic=1 console=ttyS0",
    )
    e = cfg.entry("linux single")  # extra words typed after a label are appended
    assert e.cmdline.endswith("quiet single")
    with pytest.raises(BootError, match="LOCALBOOT"):
        cfg.entry("local")
    with pytest.raises(BootError, match=r"menu\.c32, not a Linux kernel"):
        cfg.entry("menu")
    with pytest.raises(BootError, match="no label 'nothere'"):
        cfg.entry("nothere")


def test_syslinux_default_as_command_line_and_global_append() -> None:
    cfg = parse_syslinux("DEFAULT /vmlinuz initrd=/rd.gz ro\nAPPEND console=ttyS0\n")
    e = cfg.entry()
    assert (e.kernel, e.initrds, e.cmdline) == ("/vmlinuz", ["/rd.gz"], "console=ttyS0 ro")
    cfg = parse_syslinux("APPEND quiet\nLABEL a\nKERNEL /k\nLABEL b\nKERNEL /k\nAPPEND -\n")
    assert cfg.entry("a").cmdline == "quiet"  # label without APPEND takes the global one
    assert cfg.entry("b").cmdline == ""  # APPEND - : none


def test_syslinux_menu_default_and_first_label() -> None:
    cfg = parse_syslinux("UI menu.c32\nLABEL a\nKERNEL /a\nLABEL b\nMENU DEFAULT\nKERNEL /b\n")
    assert cfg.entry().kernel == "/b"
    assert parse_syslinux("LABEL first\nKERNEL /f\nLABEL second\nKERNEL /s\n").entry().label == (
        "first"
    )


def test_syslinux_errors() -> None:
    with pytest.raises(BootError, match="no LABEL and no DEFAULT"):
        parse_syslinux("PROMPT 0\n").entry()
    with pytest.raises(BootError, match="has no KERNEL"):
        parse_syslinux("DEFAULT x\nLABEL x\nAPPEND a\n").entry()
    with pytest.raises(BootError, match="LABEL without a name"):
        parse_syslinux("LABEL\n")


def test_syslinux_include() -> None:
    files = {"/syslinux/common.cfg": "LABEL inc\n KERNEL ../k\n APPEND a=1\n"}
    cfg = parse_syslinux(
        "DEFAULT inc\nINCLUDE common.cfg\n", "/syslinux/syslinux.cfg", files.__getitem__
    )
    assert (cfg.entry().kernel, cfg.entry().cmdline) == ("/k", "a=1")
    with pytest.raises(BootError, match="INCLUDE nested"):
        parse_syslinux("INCLUDE /self.cfg\n", "/self.cfg", lambda p: "INCLUDE /self.cfg\n")


MENU_LST = """\
# GRUB legacy
default=1
timeout 5
title Debian
root (hd0,0)
kernel /boot/vmlinuz-a root=/dev/sda1 ro
initrd /boot/initrd-a

title   Tiny   kvmport
  kernel --type=linux (hd0,0)/vmlinuz console=ttyS0 quiet
  initrd (hd0,0)/initrd.gz

title chain
  rootnoverify (hd0,1)
  chainloader +1
"""


def test_menu_lst_default_entry() -> None:
    e = parse_menu_lst(MENU_LST)
    assert (e.label, e.kernel, e.initrd, e.cmdline) == (
        "Tiny   kvmport",
        "/vmlinuz",
        "/initrd.gz",
        "console=ttyS0 quiet",
    )
    e = parse_menu_lst(MENU_LST, 0)
    assert (e.kernel, e.initrds, e.cmdline) == (
        "/boot/vmlinuz-a",
        ["/boot/initrd-a"],
        "root=/dev/sda1 ro",
    )
    assert parse_menu_lst("title x\nkernel /k\n").initrd is None


def test_menu_lst_errors() -> None:
    with pytest.raises(BootError, match="has no kernel"):
        parse_menu_lst(MENU_LST, 2)
    with pytest.raises(BootError, match="entry 7 requested, 3 defined"):
        parse_menu_lst(MENU_LST, 7)
    with pytest.raises(BootError, match="no 'title' entries"):
        parse_menu_lst("default 0\n")
    with pytest.raises(BootError, match="bad 'default x'"):
        parse_menu_lst("default x\ntitle a\nkernel /k\n")
    with pytest.raises(BootError, match="without a path"):
        parse_menu_lst("title a\nkernel --type=linux\n")


def _image(files: dict[str, bytes]) -> FatImage:
    return FatImage(build_fat_image(files))


def test_lookup_order_on_an_image() -> None:
    k = b"kernel"
    fs = _image(
        {
            "/boot/grub/menu.lst": b"title g\nkernel /vmlinuz grub=1\n",
            "/boot/syslinux/syslinux.cfg": b"DEFAULT s\nLABEL s\nKERNEL /vmlinuz\nAPPEND s=1\n",
            "/vmlinuz": k,
        }
    )
    assert find_config(fs) == "/boot/syslinux/syslinux.cfg"
    assert find_boot_entry(fs).cmdline == "s=1"
    fs = _image({"/boot/grub/menu.lst": b"title g\nkernel /vmlinuz grub=1\n", "/vmlinuz": k})
    assert find_boot_entry(fs).cmdline == "grub=1"
    assert find_boot_entry(fs, "0").label == "g"
    with pytest.raises(BootError, match="chosen by number"):
        find_boot_entry(fs, "g")
    fs = _image({"/EXTLINUX.CONF": b"LABEL x\nLINUX vmlinuz\n", "/VMLINUZ": k})
    assert find_boot_entry(fs).kernel == "/vmlinuz"


def test_lookup_errors() -> None:
    with pytest.raises(BootError, match="no boot loader config"):
        find_boot_entry(_image({"/readme": b"x"}))
    fs = _image({"/syslinux.cfg": b"DEFAULT a\nLABEL a\nKERNEL /vmlinuz\nAPPEND initrd=/rd\n"})
    with pytest.raises(BootError, match="names /vmlinuz, not on the image"):
        find_boot_entry(fs)


def test_bootfd_image_entries() -> None:
    fs = FatImage((ROOT / "bintest" / "bootfd.img").read_bytes())
    e = find_boot_entry(fs)
    assert (e.label, e.kernel, e.initrd) == ("kvmport", "/vmlinuz", "/initrd.gz")
    assert "console=ttyS0" in e.cmdline.split()
    assert "kvmport.shell=1" not in e.cmdline
    assert "kvmport.shell=1" in find_boot_entry(fs, "shell").cmdline.split()
    assert "quiet" not in find_boot_entry(fs, "verbose").cmdline.split()


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("LABELKERNLINUXAPPDFTIRDMNUinitrd=/, \n\t#x0")), max_size=300
    )
)
def test_fuzz_syslinux_raises_only_booterror(text: str) -> None:
    try:
        cfg = parse_syslinux(text)
        cfg.entry()
        for name in list(cfg.labels)[:5]:
            cfg.entry(name)
    except BootError:
        pass


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=300), st.one_of(st.none(), st.integers(-2, 5)))
def test_fuzz_menu_lst_raises_only_booterror(text: str, entry: int | None) -> None:
    try:
        parse_menu_lst("title a\n" + text, entry)
    except BootError:
        pass
