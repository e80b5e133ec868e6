"""Boot-format parsers for `pyhost boot`: FAT12/16 images, boot loader configs, bzImage.

Pure Python (construct); nothing here touches /dev/kvm.  Every malformed input raises
`BootError` with a one-line message.
"""

from __future__ import annotations

from pyhost.errors import PyhostError


class BootError(PyhostError):
    """A boot image, boot loader config or kernel image could not be understood."""


__all__ = ["BootError"]
