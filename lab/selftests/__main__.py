"""python3 -m lab.selftests build [--jobs N] | run DIR [options] (see run.py)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        from lab.common import LabError
        from lab.selftests.build import build

        jobs = int(argv[2]) if argv[1:2] == ["--jobs"] and len(argv) > 2 else 2
        try:
            print(build(jobs))
        except LabError as exc:
            print(f"build-selftests: {exc}", file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["run"]:
        from lab.selftests.run import main as run_main

        return run_main(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
