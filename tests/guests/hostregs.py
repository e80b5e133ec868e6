"""KVM_RUN from one asm block that loads the host's vector registers before the syscall
and stores them after it, so no compiler-generated code can touch them in between: what
the host reads back is what the kernel left it (test_fpu.py: XMM, test_avx.py: YMM).
Through either ABI: a kext-ABI VCPU gets KVM_RUN in its call envelope."""

from __future__ import annotations

from typing import Any

from bintest.cbuild import build
from pyhost.abi import ffi, lib
from pyhost.ioctl import speaks_kext


def _source(name: str, reg: str, width: int, mov: str) -> str:
    loads = " ".join(f'"{mov} {width * r}(%[in]), %%{reg}{r}\\n\\t"' for r in range(16))
    stores = " ".join(f'"{mov} %%{reg}{r}, {width * r}(%[out])\\n\\t"' for r in range(16))
    clobbers = ", ".join(f'"xmm{r}"' for r in range(16))  # xmmN names the whole register
    return rf"""
#include <stdint.h>
/* load {reg}0-15 from in, KVM_RUN on fd by a raw syscall, store {reg}0-15 to out */
long {name}(int fd, unsigned long kvm_run, unsigned long arg, const uint8_t *in,
            uint8_t *out)
{{
    long ret;
    register long rdi asm("rdi") = fd;
    register unsigned long rsi asm("rsi") = kvm_run;
    register unsigned long rdx asm("rdx") = arg;
    asm volatile({loads}
        "mov $16, %%eax\n\t"  /* SYS_ioctl */
        "syscall\n\t"
        {stores}
        : "=&a"(ret)
        : [in] "r"(in), [out] "r"(out), "r"(rdi), "r"(rsi), "r"(rdx)
        : "rcx", "r11", "memory", {clobbers});
    return ret;
}}
"""


class VectorRun:
    """run(vcpu, pattern) -> the host's registers after KVM_RUN, having loaded `pattern`."""

    def __init__(self, reg: str) -> None:
        self.width, mov = {"xmm": (16, "movdqu"), "ymm": (32, "vmovdqu")}[reg]
        name = f"run_with_{reg}"
        self.module: Any = build(f"{reg}_host", f"long {name}(int, unsigned long, "
                                 "unsigned long, const uint8_t *, uint8_t *);",
                                 _source(name, reg, self.width, mov))
        self.fn = getattr(self.module.lib, name)

    def run(self, vcpu: Any, pattern: bytes) -> bytes:
        assert len(pattern) == 16 * self.width
        out = self.module.ffi.new(f"uint8_t[{16 * self.width}]")
        if speaks_kext(vcpu.fd):  # the kext ABI: KVM_RUN in its envelope
            call = ffi.new("struct kvmp_kext_call *", {"cmd": lib.KVMP_RUN})
            ret = self.fn(vcpu.fd, lib.kvmp_kext_ioc(lib.KVMP_RUN),
                          int(ffi.cast("uintptr_t", call)), pattern, out)
        else:
            ret = self.fn(vcpu.fd, lib.KVMP_RUN, 0, pattern, out)
        assert ret == 0, f"KVM_RUN failed: {ret}"
        return bytes(out)
