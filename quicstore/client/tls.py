"""Reading the trust anchors a client verifies the gateway's certificate against."""

from __future__ import annotations

from pathlib import Path

from quicstore.certs import ca_bundle


def read_ca_file(path: str | Path) -> bytes:
    """The PEM certificates in ``path``, checked; ``ValueError`` with the path and the reason
    (missing, unreadable, not PEM) otherwise."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"CA file {path}: {exc.strerror or exc}") from None
    return ca_bundle(pem, f"CA file {path}")
