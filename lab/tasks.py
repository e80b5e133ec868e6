"""Lab tasks: filled in by the lab work (issue 3)."""
