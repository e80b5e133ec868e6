"""bootfd.img recipe tasks: filled in by the boot work (issue 4)."""
