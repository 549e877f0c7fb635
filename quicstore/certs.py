"""Self-signed certificates and fingerprints (pure: PEM bytes in and out, no file I/O)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Names a default gateway certificate covers."""


def generate_self_signed(
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    now: datetime.datetime,
    days: int = 825,
    common_name: str = "quicstore gateway",
) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate for ``hosts``: ``(cert_pem, key_pem)``.

    ``now`` is the start of validity (UTC); validity lasts ``days`` days.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def certificate_fingerprint(cert: bytes | x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate (PEM, DER or object) as lowercase hex, the form
    clients pin with ``--pin``."""
    if isinstance(cert, bytes):
        cert = (
            x509.load_pem_x509_certificate(cert)
            if cert.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(cert)
        )
    return cert.fingerprint(hashes.SHA256()).hex()


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(DER SubjectPublicKeyInfo)): what Chromium's
    ``--ignore-certificate-errors-spki-list`` takes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
