"""pyhost's command line: `python -m pyhost --help`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import exits
from .backend import device_backend
from .errors import PyhostError
from .ioctl import ABIS
from .kvm import Cap, Kvm
from .raw import DEFAULT_MEMORY, load_raw
from .status import EXIT_ERROR, EXIT_GUEST_FAULT, EXIT_INTERRUPTED, EXIT_OK
from .vcpu import Vcpu
from .x86.modes import LOAD_ADDRESS, MODES, trapped_exception
from .x86.registers import format_registers


def parse_size(text: str) -> int:
    """'2M', '512K', '1G', '0x200000' or '4096' as a number of bytes."""
    m = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)([KMG]i?B?)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 2M, 512K or 0x200000)")
    unit = (m.group(2) or "")[:1].upper()
    return int(m.group(1), 0) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def parse_address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r} (try 0x8000)") from None


def cmd_info(args: argparse.Namespace) -> int:
    with Kvm(args.device, args.abi) as kvm:
        print(f"device        {kvm.path}")
        print(f"abi           {kvm.abi}")
        print(f"backend       {device_backend(kvm.path).describe()}")
        print(f"api version   {kvm.api_version}")
        print(f"vcpu mmap     {kvm.vcpu_mmap_size} bytes")
        print(f"msrs listed   {len(kvm.get_msr_index_list())}")
        print(f"cpuid leaves  {len(kvm.get_supported_cpuid())}")
        print("capabilities:")
        for cap in Cap:
            print(f"  {cap.name:<34} {cap.value:>10}  {kvm.check_extension(cap)}")
    return EXIT_OK


def describe(ex: exits.Exit) -> str:
    match ex:
        case exits.IoOut(port, size, count, data):
            text = data.decode("latin-1").encode("unicode_escape").decode()
            return f"io out  port={port:#06x} size={size} count={count} data={data.hex()} '{text}'"
        case exits.IoIn(port, size, count, _):
            return f"io in   port={port:#06x} size={size} count={count} (answered all-ones)"
        case exits.MmioWrite(address, data):
            return f"mmio wr addr={address:#x} len={len(data)} data={data.hex()}"
        case exits.MmioRead(address, data):
            return f"mmio rd addr={address:#x} len={len(data)} (answered all-ones)"
    return repr(ex)


def print_registers(vcpu: Vcpu) -> None:
    print(format_registers(vcpu, columns=4))


def cmd_run_raw(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        image = path.read_bytes()
    except OSError as e:
        raise PyhostError(f"cannot read {path}: {e.strerror}") from None
    with Kvm(args.device, args.abi) as kvm, load_raw(kvm, image, args.mode, entry=args.entry,
                                           memory=args.mem) as guest:
        vcpu = guest.vcpu
        print(f"pyhost: {path.name}: {len(image)} bytes at {args.entry:#x}, {args.mode} mode, "
              f"{args.mem >> 10} KiB, on {kvm.path}")
        for n in range(1, args.max_exits + 1):
            ex = vcpu.run()
            if not args.quiet or not isinstance(ex, exits.IoOut | exits.IoIn | exits.MmioRead
                                                 | exits.MmioWrite):
                print(f"exit {n:>4}: {describe(ex)}")
            match ex:
                case exits.IoIn(data=data) | exits.MmioRead(data=data):
                    data[:] = b"\xff" * len(data)  # no device here: an open bus reads all-ones
                case exits.IoOut() | exits.MmioWrite():
                    pass
                case exits.Hlt():
                    trapped = trapped_exception(guest.vm, vcpu)
                    if trapped:
                        code = "" if trapped.error_code is None \
                            else f", error code {trapped.error_code:#x}"
                        print(f"stopped: exception {trapped.name} at {trapped.rip:#x}{code}")
                        print_registers(vcpu)
                        return EXIT_GUEST_FAULT
                    why = "waits for an interrupt nobody sends" if vcpu.if_flag \
                        else "with interrupts off"
                    print(f"stopped: HLT ({why})")
                    print_registers(vcpu)
                    return EXIT_OK
                case exits.Shutdown():
                    print("stopped: the guest shut down (triple fault: an exception with no "
                          "working handler)")
                    print_registers(vcpu)
                    return EXIT_GUEST_FAULT
                case _:
                    print(f"stopped: unhandled exit {ex!r}")
                    print_registers(vcpu)
                    return EXIT_ERROR
        print(f"stopped: still running after {args.max_exits} exits (--max-exits)")
        print_registers(vcpu)
        return EXIT_ERROR


def cmd_boot(args: argparse.Namespace) -> int:
    from .boot.linux import boot_spec, layout_linux
    from .hw.console import Console
    from .machine import Machine
    from .tsc import measure_device_tsc_khz, tsc_usable

    spec = boot_spec(Path(args.image) if args.image else None,
                     Path(args.kernel) if args.kernel else None,
                     Path(args.initrd) if args.initrd else None, args.append, args.label)
    layout_linux(spec.kernel, spec.initrd, spec.cmdline, args.mem)  # its errors: no device yet
    console = Console(lambda _: None, lambda: None)
    with Kvm(args.device, args.abi) as kvm:
        tsc_khz, tsc_line = None, ""
        if args.tsc_khz and "tsc_early_khz=" not in spec.cmdline:
            tsc = measure_device_tsc_khz(kvm)
            why_not = tsc_usable(tsc)
            if tsc is not None and why_not is None:
                tsc_khz = tsc.khz
            measured = "" if tsc is None else f"{tsc.khz} kHz (+-{tsc.error_ppm:.0f} ppm)"
            tsc_line = measured if why_not is None else \
                f"{measured}{'; ' if tsc else ''}{why_not}, unused"
        with Machine(kvm, spec, args.mem, tsc_khz=tsc_khz, console=console) as machine:
            if tsc_khz is not None and machine.tsc_khz is None:
                tsc_line += "; no room left on the kernel command line, unused"
            if args.verbose and tsc_line:
                print(f"pyhost: guest TSC: {tsc_line}", file=sys.stderr)
            if args.verbose:
                print(f"pyhost: {machine.describe()}", file=sys.stderr)
            outcome = machine.run()
            print(f"pyhost: {outcome.message}", file=sys.stderr)
            if outcome.registers:
                print(f"pyhost: registers: {outcome.registers}", file=sys.stderr)
            if args.verbose or outcome.status == EXIT_INTERRUPTED:
                print(f"pyhost: {machine.summary()}", file=sys.stderr)
            return outcome.status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyhost",
        description="pyhost: a Python VMM for KVM-compatible devices (Linux KVM, kvmport).",
        epilog="Device: --device, else $PYHOST_DEVICE, else /dev/kvmport, then /dev/kvm "
               "(with --abi kext on Linux: /dev/kvmport-kext). ABI: --abi, else $PYHOST_ABI, "
               "else kext on macOS and for a node named kvmport-kext, linux otherwise. "
               "kvmport pins the guest RAM a guest touches and charges it to RLIMIT_MEMLOCK: "
               "`ulimit -l` must cover the guest's memory (root has CAP_IPC_LOCK); KVM_RUN "
               "fails with ENOMEM past it.",
    )
    p.add_argument("--device", metavar="PATH", help="KVM device to open")
    p.add_argument("--abi", choices=ABIS, default=None,
                   help="how to talk to the device: linux (Linux's KVM ioctls) or kext "
                        "(kvmport's macOS ABI: call envelopes and attached handles)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="show the device, its API version and capabilities")
    info.set_defaults(func=cmd_info)

    raw = sub.add_parser(
        "run-raw", help="run a flat binary in real, protected or long mode",
        description="Load FILE at --entry, start one VCPU there in --mode, print every exit, "
                    "and print the registers when the guest stops. An exception (with no IDT "
                    "of the guest's own) stops it where it happened. Port and MMIO reads "
                    "answer all-ones. Exit status: 0 on HLT, 3 on an exception or triple "
                    "fault, 1 on anything else.",
    )
    raw.add_argument("file", metavar="FILE", help="the raw binary")
    raw.add_argument("--mode", choices=MODES, required=True,
                     help="CPU mode: real, protected (flat 32-bit) or long (64-bit, first GiB "
                          "identity-mapped)")
    raw.add_argument("--entry", type=parse_address, default=LOAD_ADDRESS,
                     help=f"load and start address (default {LOAD_ADDRESS:#x})")
    raw.add_argument("--mem", type=parse_size, default=DEFAULT_MEMORY,
                     help=f"guest memory from address 0 (default {DEFAULT_MEMORY >> 20}M)")
    raw.add_argument("--max-exits", type=int, default=100_000,
                     help="give up after this many exits (default 100000)")
    raw.add_argument("-q", "--quiet", action="store_true", help="do not print I/O exits")
    raw.set_defaults(func=cmd_run_raw)

    boot = sub.add_parser(
        "boot", help="boot Linux from a FAT disk image (or --kernel/--initrd)",
        description="Boot the default entry of IMAGE's syslinux.cfg/extlinux.conf (or GRUB "
                    "menu.lst), or --kernel with --initrd, on one VCPU with an 8250 UART "
                    "(COM1, the console here; Ctrl-A x quits on a terminal), 8259 PICs, 8254 "
                    "PIT, CMOS/RTC and i8042. Exit status: 0 when the guest powers off or "
                    "resets, 3 on a triple fault, 130 when interrupted (Ctrl-C or SIGINT: the "
                    "registers, interrupt controllers and exit counts are printed), 1 on "
                    "anything else.",
    )
    boot.add_argument("image", metavar="IMAGE", nargs="?", help="FAT12/16 boot disk image")
    boot.add_argument("-m", "--mem", type=parse_size, default=64 << 20,
                      help="guest RAM (default 64M)")
    boot.add_argument("--append", metavar="ARGS", help="add to the kernel command line")
    boot.add_argument("--kernel", metavar="FILE", help="boot this bzImage (not IMAGE's)")
    boot.add_argument("--initrd", metavar="FILE", help="with this initrd")
    boot.add_argument("--label", help="boot this entry of the boot config, not the default")
    boot.add_argument("--device", metavar="PATH", default=argparse.SUPPRESS,
                      help="KVM device to open")
    boot.add_argument("--abi", choices=ABIS, default=argparse.SUPPRESS,
                      help="linux or kext (as before the command)")
    boot.add_argument("--no-tsc-khz", dest="tsc_khz", action="store_false",
                      help="do not measure the guest's TSC rate and pass it as tsc_early_khz= "
                           "(then the guest calibrates against the PIT, and in a slow VMM fails "
                           "and falls back to the PIT as its clock)")
    boot.add_argument("-v", "--verbose", action="store_true",
                      help="say what is booted and, at the end, exit counts and timings")
    boot.set_defaults(func=cmd_boot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PyhostError as e:
        print(f"pyhost: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pyhost: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # quiets the flush at exit
        return EXIT_OK
