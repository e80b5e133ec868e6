"""x86-specific helpers: CPU mode setup for raw guests."""
