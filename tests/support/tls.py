"""TLS material for tests: a self-signed certificate made with the openssl command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["self_signed"]


def self_signed(where: Path, *dns_names: str) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for 127.0.0.1 (and `dns_names`), valid one day, in `where`."""
    cert, key = where / "cert.pem", where / "key.pem"
    names = ",".join(["IP:127.0.0.1", *(f"DNS:{n}" for n in dns_names)])
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", f"subjectAltName={names}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
