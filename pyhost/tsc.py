"""The guest's TSC rate, measured through the device, so a slow VMM can tell the kernel
(tsc_early_khz=) instead of letting it calibrate against a PIT it cannot keep up with."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import PyhostError
from .kvm import Kvm
from .vcpu import Vcpu

MSR_IA32_TSC = 0x10
TSC_MAX_ERROR_PPM = 200
TSC_PLAUSIBLE_KHZ = (100_000, 10_000_000)


@dataclass(frozen=True)
class TscMeasurement:
    khz: int
    error_ppm: float  # bound from the ioctl brackets at both ends


def measure_tsc_khz(vcpu: Vcpu, duration: float = 0.25, longest: float = 2.0,
                    max_error_ppm: float = TSC_MAX_ERROR_PPM,
                    tries: int = 5) -> TscMeasurement | None:
    """The guest's TSC rate, measured: the guest TSC (KVM_GET_MSRS of IA32_TSC, which the
    device computes from the host TSC and the VCPU's offset) read at two host times on
    the monotonic clock. Each read is bracketed by clock reads; the tightest of `tries`
    brackets at each end bounds the error, and the second end is taken later (up to
    `longest` seconds) until the bound is within max_error_ppm. None if the device cannot
    read the TSC."""

    def sample() -> tuple[int, int, int] | None:
        best: tuple[int, int, int] | None = None
        for _ in range(tries):
            t0 = time.monotonic_ns()
            value = vcpu.get_msrs([MSR_IA32_TSC]).get(MSR_IA32_TSC)
            t1 = time.monotonic_ns()
            if value is None:
                return None
            if best is None or t1 - t0 < best[2]:
                best = (value, (t0 + t1) // 2, t1 - t0)
        return best

    try:
        a = sample()
        if a is None:
            return None
        deadline = a[1] + int(longest * 1e9)
        time.sleep(duration)
        while True:
            b = sample()
            if b is None or b[1] <= a[1] or b[0] <= a[0]:
                return None
            elapsed_ns = b[1] - a[1]
            result = TscMeasurement(round((b[0] - a[0]) * 1_000_000 / elapsed_ns),
                                    (a[2] + b[2]) / 2 / elapsed_ns * 1e6)
            if result.error_ppm <= max_error_ppm or b[1] >= deadline:
                return result
            time.sleep(min(duration, max(0.0, (deadline - b[1]) / 1e9)))
    except PyhostError:
        return None


def tsc_usable(tsc: TscMeasurement | None) -> str | None:
    """Why the measurement should not be passed to the guest, or None if it should."""
    if tsc is None:
        return "not readable"
    if tsc.error_ppm > TSC_MAX_ERROR_PPM:
        return f"too imprecise (over {TSC_MAX_ERROR_PPM} ppm)"
    if not TSC_PLAUSIBLE_KHZ[0] <= tsc.khz <= TSC_PLAUSIBLE_KHZ[1]:
        return "implausible for a PC's TSC (100 MHz to 10 GHz)"
    return None


def measure_device_tsc_khz(kvm: Kvm) -> TscMeasurement | None:
    """measure_tsc_khz on a VCPU of a scratch VM (every VCPU's TSC runs at the device's
    rate), so the machine is built once, with the result already on its command line."""
    with kvm.create_vm() as vm:
        return measure_tsc_khz(vm.create_vcpu())
