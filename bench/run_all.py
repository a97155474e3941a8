"""Runs every benchmark in bench/ one after the other with its default arguments (`make bench`),
printing each one's figures under its name. Each script starts its own embedded PostgreSQL and
Redis and compares against a baseline measured in the same run; copy the figures you want to keep
into bench/RESULTS.md with the command that produced them.

Usage: python bench/run_all.py [name ...]   (names: api, expressions, engine, docs, chat, gateway)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["api", "expressions", "engine", "docs", "chat", "gateway"]


def main() -> int:
    names = sys.argv[1:] or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"== bench_{name}.py", flush=True)
        began = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")])
        print(f"== bench_{name}.py: exit {rc} after {time.monotonic() - began:.0f} s\n", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
