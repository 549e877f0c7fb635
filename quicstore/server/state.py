"""The gateway's own state in its root: TLS certificate and token signing secrets."""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..certs import certificate_fingerprint, generate_self_signed

STATE_DIR = ".quicstore"
"""Folder inside the root (bucket names cannot start with a dot, so no bucket collides)."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    fingerprint: str
    """SHA-256 of the certificate (hex), for clients to pin."""
    generated: bool
    """True if this start created the certificate."""


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_certificate(root: Path, cert_file: Path | None, key_file: Path | None) -> TlsFiles:
    """The certificate to serve: the given files, or a self-signed one kept in the root
    (generated on first start, for localhost, 127.0.0.1 and ::1)."""
    if cert_file is not None:
        if key_file is None:
            raise ValueError("--cert needs --key")
        return TlsFiles(cert_file, key_file, certificate_fingerprint(cert_file.read_bytes()), False)
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = state / "cert.pem", state / "key.pem"
    generated = False
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = generate_self_signed(now=datetime.datetime.now(datetime.UTC))
        _write_private(key_path, key_pem)
        _write_private(cert_path, cert_pem)
        generated = True
    return TlsFiles(cert_path, key_path, certificate_fingerprint(cert_path.read_bytes()), generated)


def load_secrets(root: Path, secrets_file: Path | None, *, create: bool) -> dict[str, bytes]:
    """Token signing secrets by key ID: ``{"keys": {"k1": "<hex>"}, "active": "k1"}``.

    With ``create``, a missing default file is made with one fresh 256-bit secret.
    """
    path = secrets_file or root / STATE_DIR / "secrets.json"
    if not path.exists():
        if not create or secrets_file is not None:
            raise FileNotFoundError(f"no token secrets at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"keys": {"k1": secrets.token_hex(32)}, "active": "k1"}
        _write_private(path, json.dumps(data, indent=1).encode())
    data = json.loads(path.read_text())
    return {kid: bytes.fromhex(value) for kid, value in data["keys"].items()}


def active_secret(root: Path, secrets_file: Path | None) -> tuple[str, bytes]:
    """The key ID and secret that new tokens are signed with."""
    path = secrets_file or root / STATE_DIR / "secrets.json"
    keys = load_secrets(root, secrets_file, create=True)
    data = json.loads(path.read_text())
    kid = data.get("active") or sorted(keys)[-1]
    return kid, keys[kid]


def _secrets_path(root: Path, secrets_file: Path | None) -> Path:
    return secrets_file or root / STATE_DIR / "secrets.json"


def rotate_secret(root: Path, secrets_file: Path | None) -> str:
    """Add a fresh secret and make it the one new tokens are signed with; the old ones stay
    accepted until retired. Returns the new key ID."""
    path = _secrets_path(root, secrets_file)
    load_secrets(root, secrets_file, create=True)
    data = json.loads(path.read_text())
    number = 1 + max((int(k[1:]) for k in data["keys"] if k[1:].isdigit()), default=0)
    kid = f"k{number}"
    data["keys"][kid] = secrets.token_hex(32)
    data["active"] = kid
    _write_private(path, json.dumps(data, indent=1).encode())
    return kid


def retire_secret(root: Path, secrets_file: Path | None, kid: str) -> None:
    """Stop accepting tokens signed with ``kid`` (not the active key)."""
    path = _secrets_path(root, secrets_file)
    data = json.loads(path.read_text())
    if kid not in data["keys"]:
        raise ValueError(f"no key {kid!r}")
    if kid == data.get("active"):
        raise ValueError(f"{kid!r} is the active key: rotate first")
    del data["keys"][kid]
    _write_private(path, json.dumps(data, indent=1).encode())
