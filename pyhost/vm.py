"""The VM fd: memory slots, VCPU creation and guest memory."""

from __future__ import annotations

import mmap
from typing import Literal

from .abi import ffi
from .errors import GuestMemoryError, PyhostError
from .ioctl import close_fd, kvm_ioctl, speaks_kext
from .vcpu import Vcpu

PAGE_SIZE = 4096


class GuestMemory:
    """Page-aligned, mmap-backed memory that a VM sees at guest_phys_addr."""

    def __init__(self, guest_phys_addr: int, size: int) -> None:
        if guest_phys_addr % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise PyhostError(
                f"guest memory must be whole pages: gpa={guest_phys_addr:#x} size={size:#x}"
            )
        self.guest_phys_addr = guest_phys_addr
        self.size = size
        self._map = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self._cbuf = ffi.from_buffer(self._map)
        self.host_address = int(ffi.cast("uintptr_t", self._cbuf))

    @property
    def end(self) -> int:
        return self.guest_phys_addr + self.size

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self.guest_phys_addr <= gpa and gpa + length <= self.end

    def _offset(self, gpa: int, length: int) -> int:
        if not self.contains(gpa, length):
            raise GuestMemoryError(
                f"guest access {gpa:#x}+{length:#x} is outside "
                f"[{self.guest_phys_addr:#x}, {self.end:#x})"
            )
        return gpa - self.guest_phys_addr

    def read(self, gpa: int, length: int) -> bytes:
        off = self._offset(gpa, length)
        return bytes(self.view[off:off + length])

    def write(self, gpa: int, data: bytes) -> None:
        off = self._offset(gpa, len(data))
        self.view[off:off + len(data)] = data

    def discard(self, gpa: int, length: int) -> None:
        """Give whole pages back to the host (MADV_DONTNEED): they read as zeros again,
        in the guest too where the device keeps in step (KVM_CAP_SYNC_MMU)."""
        if gpa % PAGE_SIZE or length % PAGE_SIZE:
            raise GuestMemoryError(f"discard needs whole pages: {gpa:#x}+{length:#x}")
        self._map.madvise(mmap.MADV_DONTNEED, self._offset(gpa, length), length)

    def read_u32(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 8), "little")

    def close(self) -> None:
        ffi.release(self._cbuf)
        self.view.release()
        self._map.close()


class Vm:
    """A virtual machine: create it with `Kvm.create_vm()`."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        self.fd = fd
        self.vcpu_mmap_size = vcpu_mmap_size  # KVM_GET_VCPU_MMAP_SIZE of the system fd
        self.memory: dict[int, GuestMemory] = {}  # by slot
        self.vcpus: list[Vcpu] = []

    def fileno(self) -> int:
        return self.fd

    # -- VM ioctls ------------------------------------------------------
    def set_user_memory_region(
        self, slot: int, guest_phys_addr: int, memory_size: int, userspace_addr: int,
        flags: int = 0,
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION: memory_size 0 deletes the slot."""
        region = ffi.new("struct kvmp_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": memory_size, "userspace_addr": userspace_addr,
        })
        kvm_ioctl(self.fd, "SET_USER_MEMORY_REGION", region)

    def get_dirty_log(self, slot: int, size: int | None = None) -> list[int]:
        """KVM_GET_DIRTY_LOG: the pages of `slot` (numbered from its start) written since
        dirty logging began or since the last call, which clears the log.

        `size` is the slot's size in bytes, by default that of pyhost's memory in `slot`.
        """
        if size is None:
            mem = self.memory.get(slot)
            size = mem.size if mem else PAGE_SIZE
        words = (size // PAGE_SIZE + 63) // 64
        bitmap = ffi.new("kvmp_u64[]", max(words, 1))
        log = ffi.new("struct kvmp_dirty_log *", {
            "slot": slot, "dirty_bitmap": int(ffi.cast("uintptr_t", bitmap))})
        kvm_ioctl(self.fd, "GET_DIRTY_LOG", log)
        return [i * 64 + b for i in range(words) for b in range(64) if bitmap[i] >> b & 1]

    def create_vcpu(self, vcpu_id: int | None = None,
                    run_area: Literal["mmap", "ioctl"] | None = None) -> Vcpu:
        """KVM_CREATE_VCPU; run_area picks mmap of the fd or kvmport's KVM_MMAP_VCPU (the
        default for the kext ABI, whose macOS node cannot be mapped; mmap otherwise)."""
        if vcpu_id is None:
            vcpu_id = len(self.vcpus)
        if run_area is None:
            run_area = "ioctl" if speaks_kext(self.fd) else "mmap"
        vcpu = Vcpu(kvm_ioctl(self.fd, "CREATE_VCPU", vcpu_id), vcpu_id, self.vcpu_mmap_size,
                    run_area)
        self.vcpus.append(vcpu)
        return vcpu

    def set_tss_addr(self, addr: int) -> None:
        kvm_ioctl(self.fd, "SET_TSS_ADDR", addr)

    def set_identity_map_addr(self, addr: int) -> None:
        kvm_ioctl(self.fd, "SET_IDENTITY_MAP_ADDR", ffi.new("kvmp_u64 *", addr))

    def register_coalesced_mmio(self, addr: int, size: int, pio: bool = False) -> None:
        """KVM_REGISTER_COALESCED_MMIO: guest writes in [addr, addr + size) (ports if pio)
        go into the VM's ring without an exit while it has room (Vcpu.drain_coalesced)."""
        zone = ffi.new("struct kvmp_coalesced_mmio_zone *",
                       {"addr": addr, "size": size, "pio": int(pio)})
        kvm_ioctl(self.fd, "REGISTER_COALESCED_MMIO", zone)

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: bool = False) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO: drops the zones of that kind inside the range."""
        zone = ffi.new("struct kvmp_coalesced_mmio_zone *",
                       {"addr": addr, "size": size, "pio": int(pio)})
        kvm_ioctl(self.fd, "UNREGISTER_COALESCED_MMIO", zone)

    # -- guest memory ---------------------------------------------------
    def add_memory(self, guest_phys_addr: int, size: int, flags: int = 0) -> GuestMemory:
        """Allocate memory and give it to the guest at guest_phys_addr, in the next free slot."""
        slot = next(s for s in range(len(self.memory) + 1) if s not in self.memory)
        mem = GuestMemory(guest_phys_addr, size)
        try:
            self.set_user_memory_region(slot, guest_phys_addr, size, mem.host_address, flags)
        except BaseException:
            mem.close()
            raise
        self.memory[slot] = mem
        return mem

    def remove_memory(self, mem: GuestMemory) -> None:
        slot = next(s for s, m in self.memory.items() if m is mem)
        self.set_user_memory_region(slot, mem.guest_phys_addr, 0, mem.host_address)
        del self.memory[slot]
        mem.close()

    def _region(self, gpa: int, length: int) -> GuestMemory:
        for mem in self.memory.values():
            if mem.contains(gpa, length):
                return mem
        raise GuestMemoryError(f"no guest memory at {gpa:#x}+{length:#x}")

    def read(self, gpa: int, length: int) -> bytes:
        return self._region(gpa, length).read(gpa, length)

    def write(self, gpa: int, data: bytes) -> None:
        self._region(gpa, len(data)).write(gpa, data)

    # -- lifetime -------------------------------------------------------
    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            close_fd(self.fd)
            self.fd = -1
        # the kernel drops its references with the VM; only now may the pages go
        for mem in self.memory.values():
            mem.close()
        self.memory.clear()

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
