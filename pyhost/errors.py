"""pyhost's exceptions: every user-facing failure is a PyhostError with a clear message."""

from __future__ import annotations

import errno
import os


class PyhostError(Exception):
    """A failure to report to the user as one line, without a traceback."""


class NoDeviceError(PyhostError):
    """No KVM-compatible device could be opened."""

    def __init__(self, tried: list[tuple[str, str]]) -> None:
        lines = ", ".join(f"{path} ({why})" for path, why in tried)
        super().__init__(
            f"no KVM device could be opened; tried {lines}. Load a driver (Linux's kvm "
            "module, or kvmport: `invoke build-kext`), set PYHOST_DEVICE or pass --device, "
            "or run inside the lab: `invoke lab --cpu svm -- ...`"
        )
        self.tried = tried


# KVM_RUN's ENOMEM on kvmport: its pins of guest RAM passed RLIMIT_MEMLOCK (Linux's KVM
# pins nothing and never needs it; docs/driver.md, "Security")
MEMLOCK_HINT = ("kvmport pins the guest RAM the guest touches and charges it to the "
                "locked-memory limit: raise `ulimit -l` to cover guest RAM (or unlimited), "
                "or run with CAP_IPC_LOCK")


class KvmError(PyhostError, OSError):
    """An ioctl failed: names the ioctl, the errno's name and its meaning."""

    def __init__(self, ioctl: str, err: int) -> None:
        name = errno.errorcode.get(err, f"errno {err}")
        message = f"{ioctl} failed: {name} ({os.strerror(err)})"
        if ioctl == "KVM_RUN" and err == errno.ENOMEM:
            message += f"; {MEMLOCK_HINT}"
        OSError.__init__(self, err, message)
        self.ioctl = ioctl

    def __str__(self) -> str:
        return str(self.strerror)


class GuestMemoryError(PyhostError):
    """A guest-physical access outside the memory the VM has."""
