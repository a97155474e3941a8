"""Makes grpcio-tools' generated stubs importable from inside mintleaf_server.

protoc's Python output imports sibling files absolutely (`from mintleaf.v1 import x_pb2`), which
would claim the top-level name `mintleaf` that the SDK owns. This rewrites those imports to relative
ones (what protoletariat does; its releases pin protobuf < 6, so we keep these few lines instead)."""

from __future__ import annotations

import pathlib
import re
import sys

PATTERN = re.compile(r"^from mintleaf\.v1 import ", re.MULTILINE)


def main(root: str) -> None:
    base = pathlib.Path(root)
    for path in sorted(base.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        fixed = PATTERN.sub("from . import ", text)
        if fixed != text:
            path.write_text(fixed)
    # Packages for every generated directory.
    for directory in [base, *[p for p in base.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        (directory / "__init__.py").touch()


if __name__ == "__main__":
    main(sys.argv[1])
