"""pyhost: a Python control plane for KVM-compatible devices (Linux KVM, kvmport).

    from pyhost import Kvm
    kvm = Kvm()                      # $PYHOST_DEVICE, /dev/kvmport, /dev/kvm
    vm = kvm.create_vm()
    mem = vm.add_memory(0, 1 << 20)
    vcpu = vm.create_vcpu()
    exit = vcpu.run()                # a typed exit from pyhost.exits
"""

from .cpuid import CpuidEntry
from .errors import GuestMemoryError, KvmError, NoDeviceError, PyhostError
from .exits import (
    Exit,
    FailEntry,
    Hlt,
    InternalError,
    Intr,
    IoIn,
    IoOut,
    IrqWindowOpen,
    MmioRead,
    MmioWrite,
    SetTpr,
    Shutdown,
    SystemEvent,
    Unknown,
)
from .kvm import Cap, Kvm
from .vcpu import Vcpu
from .vm import GuestMemory, Vm

__all__ = [
    "Cap", "CpuidEntry", "Exit", "FailEntry", "GuestMemory", "GuestMemoryError", "Hlt",
    "InternalError", "Intr", "IoIn", "IoOut", "IrqWindowOpen", "Kvm", "KvmError", "MmioRead",
    "MmioWrite", "NoDeviceError", "PyhostError", "SetTpr", "Shutdown", "SystemEvent", "Unknown",
    "Vcpu", "Vm",
]
