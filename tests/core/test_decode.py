"""The core's MMIO instruction decoder, cross-checked against iced-x86 on generated streams."""

from __future__ import annotations

import iced_x86 as ix
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .corelib import load

core = load()
ffi, lib = core.ffi, core.lib
LOAD, STORE = 2, 1

# (opcode bytes, has ModRM, is a store, immediate kind)
FORMS = [
    (b"\x88", True, True, None), (b"\x89", True, True, None),
    (b"\x8a", True, False, None), (b"\x8b", True, False, None),
    (b"\xc6", True, True, "imm8"), (b"\xc7", True, True, "immz"),
    (b"\x0f\xb6", True, False, None), (b"\x0f\xb7", True, False, None),
    (b"\x0f\xbe", True, False, None), (b"\x0f\xbf", True, False, None),
    (b"\xa0", False, False, None), (b"\xa1", False, False, None),
    (b"\xa2", False, True, None), (b"\xa3", False, True, None),
]
LEGACY_PREFIXES = [0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65]


def decode(code: bytes, mode: int):
    insn = ffi.new("struct kvmp_insn *")
    n = lib.kvmp_decode_mov(code, len(code), mode, insn)
    return n, insn


@st.composite
def instructions(draw):
    mode = draw(st.sampled_from([16, 32, 64]))
    opcode, has_modrm, _store, _imm = draw(st.sampled_from(FORMS))
    prefixes = bytes(draw(st.lists(st.sampled_from(LEGACY_PREFIXES), max_size=3)))
    rex = bytes([draw(st.integers(0x40, 0x4F))]) if mode == 64 and draw(st.booleans()) else b""
    body = bytearray()
    if has_modrm:
        mod = draw(st.integers(0, 2))
        reg = 0 if opcode in (b"\xc6", b"\xc7") else draw(st.integers(0, 7))
        rm = draw(st.integers(0, 7))
        body.append(mod << 6 | reg << 3 | rm)
    tail = draw(st.binary(min_size=16, max_size=16))  # SIB, displacement, immediate, junk
    return mode, prefixes + rex + opcode + bytes(body) + tail


def iced_view(code: bytes, mode: int):
    ins = ix.Decoder(mode, code).decode()
    if ins.code == ix.Code.INVALID:
        return None
    mem_op = next(i for i in range(ins.op_count) if ins.op_kind(i) == ix.OpKind.MEMORY)
    size = ix.MemorySizeExt.size(ins.memory_size)
    regs = [ins.op_register(i) for i in range(ins.op_count) if ins.op_kind(i) == ix.OpKind.REGISTER]
    imms = [i for i in range(ins.op_count) if ins.op_kind(i) not in (ix.OpKind.MEMORY,
                                                                      ix.OpKind.REGISTER)]
    return ins, mem_op, size, regs, imms


@settings(max_examples=3000, deadline=None)
@given(instructions())
def test_decoder_agrees_with_iced_x86(case):
    mode, code = case
    view = iced_view(code, mode)
    n, insn = decode(code, mode)
    if view is None:  # iced says invalid (e.g. 16-bit moffs quirks): ours must not accept more
        return
    ins, mem_op, size, regs, imms = view
    assert n == ins.len, (code[:ins.len].hex(), mode)
    assert insn.length == ins.len
    assert insn.kind == (STORE if mem_op == 0 else LOAD)
    assert insn.mem_size == size
    if regs:
        reg = regs[0]
        full = ix.RegisterExt.full_register(reg)
        assert insn.reg == full - ix.Register.RAX
        assert insn.reg_size == ix.RegisterExt.size(reg)
        assert bool(insn.reg_high_byte) == (reg in (ix.Register.AH, ix.Register.CH,
                                                     ix.Register.DH, ix.Register.BH))
    if imms:
        assert insn.has_imm
        mask = (1 << (8 * size)) - 1
        assert insn.imm == ins.immediate(imms[0]) & mask


@pytest.mark.parametrize("hexcode, mode, length", [
    ("8b0425", 64, -11),          # truncated: needs more bytes (-EAGAIN)
    ("01c8", 32, -95),            # ADD: not a MOV (-EOPNOTSUPP)
    ("89c8", 32, -95),            # MOV between registers: no memory operand
    ("c7c000000000", 32, -95),    # C7 with a register operand
    ("c74000", 32, -11),          # C7 /0 with disp8, immediate missing
])
def test_rejects_what_it_cannot_decode(hexcode, mode, length):
    assert decode(bytes.fromhex(hexcode), mode)[0] == length


def test_load_results_merge_like_the_cpu():
    def result(code: str, mode: int, old: int, data: int) -> int:
        n, insn = decode(bytes.fromhex(code), mode)
        assert n > 0
        return lib.kvmp_insn_load_result(insn, old, data)

    old = 0x1122334455667788
    assert result("8b00", 64, old, 0xAABBCCDD) == 0xAABBCCDD             # 32-bit: zero-extends
    assert result("668b00", 64, old, 0xAABB) == 0x112233445566AABB      # 16-bit: merges
    assert result("8a20", 32, old, 0x99) == 0x1122334455669988          # AH
    assert result("0fbe00", 32, old, 0x80) == 0xFFFFFF80                # MOVSX byte
    assert result("480fbf00", 64, old, 0x8000) == 0xFFFFFFFFFFFF8000    # MOVSX to 64
    assert result("0fb600", 32, old, 0xFF80) == 0x80                    # MOVZX byte


def test_store_values():
    _, insn = decode(bytes.fromhex("48c700f0ffffff"), 64)  # mov qword [rax], -16
    assert lib.kvmp_insn_store_value(insn, 0) == 0xFFFFFFFFFFFFFFF0
    _, insn = decode(bytes.fromhex("8820"), 32)             # mov [eax], ah
    assert lib.kvmp_insn_store_value(insn, 0xBEEF) == 0xBE


# --- control-register accesses (SVM without decode assists decodes them itself) ---
CR_MOV, CR_CLTS, CR_LMSW, CR_READ = 1, 2, 3, 4
GPR_NAMES = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
             *(f"R{n}" for n in range(8, 16))]


@st.composite
def cr_accesses(draw):
    mode = draw(st.sampled_from([16, 32, 64]))
    prefixes = bytes(draw(st.lists(st.sampled_from([*LEGACY_PREFIXES, 0xF0]), max_size=2)))
    rex = bytes([draw(st.integers(0x40, 0x4F))]) if mode == 64 and draw(st.booleans()) else b""
    form = draw(st.sampled_from(["mov", "read", "clts", "lmsw"]))
    if form == "clts":
        body = b"\x0f\x06"
    elif form == "lmsw":
        body = bytes([0x0F, 0x01, 0xF0 | draw(st.integers(0, 7))])  # mod 3, reg 6
    else:
        cr = draw(st.sampled_from([0, 3, 4, 8 - 8 * (not rex)]))
        op = 0x22 if form == "mov" else 0x20
        body = bytes([0x0F, op, 0xC0 | (cr & 7) << 3 | draw(st.integers(0, 7))])
    return mode, prefixes + rex + body + b"\x90" * 8


@settings(max_examples=2000, deadline=None)
@given(cr_accesses())
def test_cr_decoder_agrees_with_iced_x86(case):
    mode, code = case
    ins = ix.Decoder(mode, code).decode()
    out = ffi.new("struct kvmp_cr_insn *")
    n = lib.kvmp_decode_cr(code, len(code), mode, out)
    if ins.code == ix.Code.INVALID:  # e.g. LOCK CLTS: ours may decode it, the CPU #UDs first
        return
    assert n == ins.len == out.length, (code.hex(), n, ins.len)
    name = ix.Mnemonic.__dict__  # noqa: F841 (keeps iced's names importable for messages)
    if ins.mnemonic == ix.Mnemonic.CLTS:
        assert out.kind == CR_CLTS
        return
    to_cr = ins.mnemonic == ix.Mnemonic.MOV and _register_name(ins.op_register(0)).startswith("CR")
    gpr = ins.op_register(1 if to_cr else 0)
    reg_name = ix.RegisterExt.full_register(gpr)
    assert GPR_NAMES[out.reg] == _register_name(reg_name), code.hex()
    if ins.mnemonic == ix.Mnemonic.LMSW:
        assert out.kind == CR_LMSW
    elif to_cr:
        assert out.kind == CR_MOV
        assert f"CR{out.cr}" == _register_name(ins.op_register(0)), code.hex()
    else:
        assert out.kind == CR_READ
        assert f"CR{out.cr}" == _register_name(ins.op_register(1)), code.hex()


def _register_name(reg: int) -> str:
    return next(k for k, v in vars(ix.Register).items() if v == reg and not k.startswith("_"))


def test_cr_decoder_refuses_other_forms():
    out = ffi.new("struct kvmp_cr_insn *")
    for code in (b"\x0f\x21\xc0", b"\x0f\x01\x30", b"\x0f\x01\xd0", b"\x90", b"\x0f"):
        assert lib.kvmp_decode_cr(code, len(code), 32, out) < 0, code.hex()


STRING_OPS = {0xA4: ("MOVS", 3), 0xA5: ("MOVS", 3), 0xAA: ("STOS", 1), 0xAB: ("STOS", 1),
              0xAC: ("LODS", 2), 0xAD: ("LODS", 2)}
STRING_PREFIXES = [0x66, 0x67, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65]
SEGMENTS = [ix.Register.ES, ix.Register.CS, ix.Register.SS, ix.Register.DS, ix.Register.FS,
            ix.Register.GS]


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([16, 32, 64]), st.lists(st.sampled_from(STRING_PREFIXES), max_size=4),
       st.booleans(), st.integers(0x40, 0x4F), st.sampled_from(sorted(STRING_OPS)))
def test_string_decoder_agrees_with_iced_x86(mode, prefixes, use_rex, rex, op):
    code = bytes(prefixes) + (bytes([rex]) if mode == 64 and use_rex else b"") + bytes([op])
    ins = ix.Decoder(mode, code + b"\x90" * 4).decode()
    n, insn = decode(code, mode)
    assert ins.code != ix.Code.INVALID
    assert n == ins.len == len(code)
    name, kind = STRING_OPS[op]
    assert insn.string == {"MOVS": 1, "STOS": 2, "LODS": 3}[name]
    assert ix.Mnemonic.__dict__  # iced's names are there for the messages below
    assert insn.kind == kind, ins
    assert insn.mem_size == ix.MemorySizeExt.size(ins.memory_size), ins
    assert bool(insn.rep) == (ins.has_rep_prefix or ins.has_repne_prefix), ins
    # rDI's (or for LODS rSI's) width is the address size
    mem = 0 if name in ("MOVS", "STOS") else 1
    kinds = {ix.OpKind.MEMORY_ESDI: 2, ix.OpKind.MEMORY_ESEDI: 4, ix.OpKind.MEMORY_ESRDI: 8,
             ix.OpKind.MEMORY_SEG_SI: 2, ix.OpKind.MEMORY_SEG_ESI: 4,
             ix.OpKind.MEMORY_SEG_RSI: 8}
    assert insn.addr_size == kinds[ins.op_kind(mem)], ins
    if name != "STOS":
        seg = ins.memory_segment
        if mode == 64 and seg not in (ix.Register.FS, ix.Register.GS):
            assert insn.seg < 4, ins  # iced names an ignored prefix; the base is 0 either way
        else:
            assert SEGMENTS[insn.seg] == seg, ins
    if name != "MOVS":
        assert insn.reg == 0 and insn.reg_size == insn.mem_size
