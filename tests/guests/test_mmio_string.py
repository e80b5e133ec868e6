"""String instructions (MOVS, STOS, LODS, with REP, both directions) on MMIO, as a VGA BIOS
clears and scrolls its legacy window: the string_mmio_real micro-guest on every --device.
Linux KVM is the oracle: each element is one MMIO exit, in order, and the registers end
as the CPU would leave them."""

from __future__ import annotations

from pyhost import Hlt, IoOut, MmioRead, MmioWrite
from pyhost.raw import RawGuest

MEMORY = 0x90000  # RAM below, MMIO from here up (the guest uses 0xa0000 and 0xb0000)


def pattern(address: int, n: int) -> bytes:
    """What the test's MMIO returns: each byte is its address's low byte."""
    return bytes((address + i) & 0xFF for i in range(n))


def run_step(g: RawGuest, step: int) -> list[tuple[str, int, bytes]]:
    """Run to the OUT of `step`, answering MMIO reads; the accesses in order."""
    seen: list[tuple[str, int, bytes]] = []
    for _ in range(100):
        ex = g.vcpu.run()
        match ex:
            case MmioWrite(address, data):
                seen.append(("w", address, bytes(data)))
            case MmioRead(address, data):
                data[:] = pattern(address, len(data))
                seen.append(("r", address, bytes(data)))
            case IoOut(0x70, 1, 1, out):
                assert out == bytes([step]), (step, out)
                return seen
            case _:
                raise AssertionError(f"step {step}: unexpected exit {ex}")
    raise AssertionError(f"step {step}: no end")


def test_string_instructions_on_mmio_go_one_element_per_exit(raw_guest, guest_symbols):
    g = raw_guest("string_mmio_real", memory=MEMORY)
    sym = guest_symbols("string_mmio_real")
    assert run_step(g, 1) == [("w", 0xA0010 + 2 * i, b"\x34\x12") for i in range(3)]
    r = g.vcpu.get_regs()
    assert (r.rdi & 0xFFFF, r.rcx & 0xFFFF) == (0x16, 0)

    assert run_step(g, 2) == [("w", 0xA0020 + i, bytes([i + 1])) for i in range(4)]
    r = g.vcpu.get_regs()
    assert (r.rsi & 0xFFFF, r.rdi & 0xFFFF, r.rcx & 0xFFFF) == (sym["src"] + 4, 0x24, 0)

    assert run_step(g, 3) == [("r", 0xA0030, b"\x30\x31"), ("r", 0xA0032, b"\x32\x33")]
    assert g.vm.read(sym["dst"], 4) == b"\x30\x31\x32\x33"  # MMIO to RAM
    r = g.vcpu.get_regs()
    assert (r.rsi & 0xFFFF, r.rdi & 0xFFFF, r.rcx & 0xFFFF) == (0x34, sym["dst"] + 4, 0)

    # MMIO to MMIO, walking down, source through FS: a read, then the write, per element
    assert run_step(g, 4) == [("r", 0xA0040, b"\x40"), ("w", 0xB0050, b"\x40"),
                              ("r", 0xA003F, b"\x3f"), ("w", 0xB004F, b"\x3f")]
    r = g.vcpu.get_regs()
    assert (r.rsi & 0xFFFF, r.rdi & 0xFFFF, r.rcx & 0xFFFF) == (0x3E, 0x4E, 0)

    assert run_step(g, 5) == [("r", 0xA0060, b"\x60\x61\x62\x63")]
    r = g.vcpu.get_regs()
    assert (r.rax & 0xFFFFFFFF, r.rsi & 0xFFFF) == (0x63626105, 0x64)  # AL: the step's 5
    assert isinstance(g.vcpu.run(), Hlt)
