"""Credit a seed from the host to the guest kernel's RNG so getrandom() does not block.

Usage: python seed_rng.py HEX_SEED

Emulated machines have little entropy: under Bochs (deterministic time) the kernel's
CRNG may take minutes to initialise, and Python's `random` (imported by pytest
plugins such as hypothesis) blocks in getrandom() until it has. A lab is a test rig,
not a place for secrets: a seed from the host's os.urandom, credited with
RNDADDENTROPY (needs root), is what a bootloader-provided seed would be.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])


def main() -> None:
    seed = bytes.fromhex(sys.argv[1])
    fd = os.open("/dev/urandom", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
