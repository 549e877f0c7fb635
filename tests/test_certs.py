"""Certificates: generation, fingerprints, CA bundle checks."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from quicstore.certs import (
    ca_bundle,
    certificate_fingerprint,
    generate_ca,
    generate_self_signed,
    issue_certificate,
)
from quicstore.client.tls import read_ca_file


def test_self_signed_covers_default_hosts_and_fingerprint_is_stable() -> None:
    cert_pem, _key = generate_self_signed(now=datetime.datetime.now(datetime.UTC))
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert certificate_fingerprint(cert_pem) == certificate_fingerprint(der)
    assert len(certificate_fingerprint(cert)) == 64


def test_issued_certificate_chains_to_its_ca() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_pem, ca_key = generate_ca(now=now)
    leaf_pem, _ = issue_certificate(ca_pem, ca_key, now=now, common_name="client-a", client=True)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)


def test_ca_bundle_accepts_pem_and_rejects_anything_else(tmp_path: Path) -> None:
    cert_pem, _ = generate_self_signed(now=datetime.datetime.now(datetime.UTC))
    assert ca_bundle(cert_pem + cert_pem) == cert_pem + cert_pem
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    for junk in (b"", b"hello\n", broken):
        with pytest.raises(ValueError, match="my-ca"):
            ca_bundle(junk, "my-ca")
    good = tmp_path / "ca.pem"
    good.write_bytes(cert_pem)
    assert read_ca_file(good) == cert_pem
    with pytest.raises(ValueError, match="No such file"):
        read_ca_file(tmp_path / "absent.pem")
