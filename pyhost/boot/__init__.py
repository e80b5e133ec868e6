"""What `pyhost boot` boots: parsers of FAT12/16 images, boot loader configs and bzImage
(pure Python, construct), and linux.py, which turns them into a boot spec and the layout the
loader writes into a VM (the only module here that touches a VM: apply_layout).  Every
malformed input raises `BootError` with a one-line message.
"""

from __future__ import annotations

from pyhost.errors import PyhostError


class BootError(PyhostError):
    """A boot image, boot loader config or kernel image could not be understood."""


__all__ = ["BootError"]
