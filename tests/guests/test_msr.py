"""Guest RDMSR and host KVM_GET/SET_MSRS of the MSRs Linux KVM answers, on every --device.
tests/lab/test_differential.py holds the full sweep of both devices against each other."""

from __future__ import annotations

import pytest

from bintest.build import build
from pyhost.kvm import Kvm
from pyhost.raw import load_raw

from .msr_sweep import HOST_VALUES, sweep

MCG_CTL_P, MCG_SER_P = 1 << 8, 1 << 24
QEMU_BANKS = 10  # QEMU 7.2's MCE_BANKS_DEF

# What QEMU 7.2 writes with KVM_SET_MSRS when it resets a qemu64 VCPU (kvm_put_msrs at
# KVM_PUT_RESET_STATE) on an AMD host: one call, and it aborts unless all are taken.
QEMU_RESET_MSRS: dict[int, int] = {
    0x174: 0, 0x175: 0, 0x176: 0,  # SYSENTER
    0x277: 0x0007040600070406,  # PAT
    0xC0000081: 0,  # STAR
    0x1A0: 1,  # MISC_ENABLE: fast strings
    0xC0000083: 0, 0xC0000102: 0, 0xC0000084: 0, 0xC0000082: 0,  # CSTAR KGSBASE FMASK LSTAR
    0x10: 0,  # TSC
    0x12: 0, 0x11: 0,  # the old KVM system-time and wall-clock MSRs
    0x2FF: 0,  # MTRRdefType, then the fixed ranges and the 8 variable pairs
    **dict.fromkeys([0x250, 0x258, 0x259, *range(0x268, 0x270)], 0),
    **dict.fromkeys(range(0x200, 0x210), 0),
    0x17A: 0, 0x17B: 2**64 - 1,  # MCG_STATUS, MCG_CTL
    # 10 banks: CTL all ones, STATUS ADDR MISC zero
    **{0x400 + i: (2**64 - 1 if i % 4 == 0 else 0) for i in range(4 * QEMU_BANKS)},
}
# written only when KVM_GET_MSR_INDEX_LIST names them, with these values
QEMU_IF_LISTED = {0xC0010117: 0, 0x9E: 0x30000, 0x34: 0}


def test_msr_sweep_answers_what_linux_kvm_answers(kvm):
    answers = sweep(kvm)
    assert answers[0xC0000080] is not None and answers[0xC0000080] & 0x500 == 0x500  # LMA LME
    assert answers[0xFE] == 0x508  # MTRRcap: WC, fixed, 8 variable ranges
    # the MSRs that Linux KVM answers on every CPU and a guest meets early
    for index in (0x8B, 0x179, 0x17A, 0x1A0, 0x2FF, 0x200, 0x250, 0xC0010015, 0xC001001F,
                  0xC0010055, *HOST_VALUES):
        assert answers[index] is not None, f"#GP on MSR {index:#x}"
    # no in-kernel local APIC: no x2APIC MSRs; before SETUP_MCE: 32 zeroed banks, no MCG_CTL
    for index in (0x802, 0x830, 0x17B, 0x210):
        assert answers[index] is None, f"MSR {index:#x} read {answers[index]:#x}"
    assert answers[0x179] == 32 and answers[0x400] == 0 and answers[0x47F] == 0


def test_machine_check_banks_after_setup_mce(kvm):
    cap = kvm.get_mce_cap_supported()
    assert cap & (MCG_CTL_P | MCG_SER_P) == MCG_CTL_P | MCG_SER_P
    answers = sweep(kvm, mcg_cap=MCG_CTL_P | MCG_SER_P | QEMU_BANKS)
    assert answers[0x179] & 0x1FF == MCG_CTL_P | QEMU_BANKS  # kvm_amd keeps only bits 8:0
    assert answers[0x17B] == 2**64 - 1
    for bank in range(QEMU_BANKS):
        assert answers[0x400 + 4 * bank] == 2**64 - 1
        assert answers[0x401 + 4 * bank] == 0
    assert answers[0x400 + 4 * QEMU_BANKS] is None


def qemu_reset_list(kvm: Kvm) -> dict[int, int]:
    listed = set(kvm.get_msr_index_list())
    return {**QEMU_RESET_MSRS, **{i: v for i, v in QEMU_IF_LISTED.items() if i in listed}}


@pytest.mark.parametrize("with_mce", [True, False], ids=["setup-mce", "no-setup-mce"])
def test_kvm_set_msrs_takes_what_qemu_writes_on_reset(kvm, with_mce):
    msrs = qemu_reset_list(kvm)
    with load_raw(kvm, build("hello_real").read_bytes(), "real") as g:
        if with_mce:  # as QEMU does when the device has KVM_CAP_MCE
            g.vcpu.setup_mce(MCG_CTL_P | MCG_SER_P | QEMU_BANKS)
            assert g.vcpu.set_msrs(msrs) == len(msrs)
            back = g.vcpu.get_msrs(list(msrs))
            assert {i: v for i, v in back.items() if i not in HOST_VALUES} == {
                i: v for i, v in msrs.items() if i not in HOST_VALUES}
        else:  # without it Linux refuses MCG_CTL = ~0 (no MCG_CTL_P): QEMU would abort
            assert g.vcpu.set_msrs(msrs) == list(msrs).index(0x17B)
