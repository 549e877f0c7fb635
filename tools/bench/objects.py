"""Deterministic test objects on disk and the workloads built from them.

Object bytes are an AES-128-CTR keystream keyed by sha256(seed, name): random-looking (so TLS
and QUIC see incompressible data), reproducible for a given seed, and fast to produce (GB/s).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tools.bench.model import MiB, Obj, Profile, Request, Workload

_CHUNK = 4 * MiB


def _write_object(root: Path, rel: str, size: int, seed: int) -> Obj:
    key = hashlib.sha256(f"{seed}:{rel}".encode()).digest()
    enc = Cipher(algorithms.AES(key[:16]), modes.CTR(key[16:])).encryptor()
    digest = hashlib.sha256()
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    zeros = bytes(_CHUNK)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, _CHUNK)
            block = enc.update(zeros[:n])
            digest.update(block)
            f.write(block)
            left -= n
    return Obj(path="/" + rel, size=size, sha256=digest.hexdigest())


@dataclass
class ObjectSet:
    """The files every server serves from ``root`` (its document root)."""

    root: Path
    big: Obj
    impaired: Obj
    small: list[Obj]
    epoch: list[Obj]
    warmup: Obj
    """A 4 KiB object the clients fetch before the measured window."""

    @classmethod
    def generate(cls, root: Path, profile: Profile, seed: int = 1) -> ObjectSet:
        """Write all objects of ``profile`` under ``root`` (bytes depend only on ``seed``)."""
        root.mkdir(parents=True, exist_ok=True)
        return cls(
            root=root,
            big=_write_object(root, "big.bin", profile.big_size, seed),
            impaired=_write_object(root, "impaired.bin", profile.impaired_size, seed),
            small=[
                _write_object(root, f"small/s{i:05d}.bin", profile.small_size, seed)
                for i in range(profile.small_count)
            ],
            epoch=[
                _write_object(root, f"epoch/e{i:05d}.bin", profile.epoch_size, seed)
                for i in range(profile.epoch_count)
            ],
            warmup=_write_object(root, "warmup.bin", 4096, seed),
        )


def build_workloads(objects: ObjectSet, profile: Profile) -> list[Workload]:
    """Workloads (a) to (f) in table order, sized by ``profile``."""
    big = objects.big
    whole = (Request(big.path, big.size),)
    ranged = min(profile.ranged_size, big.size)
    part = -(-ranged // profile.ranges)
    ranges = tuple(
        Request(big.path, min(part, ranged - lo), lo, min(lo + part, ranged) - 1)
        for lo in range(0, ranged, part)
    )
    small = tuple(Request(o.path, o.size) for o in objects.small)
    epoch = tuple(Request(o.path, o.size) for o in objects.epoch)
    imp = objects.impaired
    mib = big.size // MiB
    return [
        Workload("a", "a", f"(a) 1 x {mib} MiB GET, 1 connection", "MB/s", whole, 1, big=big),
        Workload("b", "b", f"(b) {ranged // MiB} MiB of it as {len(ranges)} parallel ranges",
                 "MB/s", ranges, len(ranges)),
        Workload("c1", "c", f"(c) {len(small)} x 4 KiB sequential", "ms", small, 1),
        Workload("c32", "c", f"(c) {len(small)} x 4 KiB, {profile.concurrency} in flight",
                 "req/s", small, profile.concurrency),
        Workload("d", "d", f"(d) epoch {len(epoch)} x 1 MiB, {profile.concurrency} in flight",
                 "MB/s", epoch, profile.concurrency),
        Workload("e", "e", f"(e) 1 x {imp.size // MiB} MiB, {2 * profile.delay_ms:g} ms RTT, "
                 f"{profile.loss:.0%} loss", "MB/s", (Request(imp.path, imp.size),), 1,
                 impaired=True, quic_only=True),
        Workload("f", "f", f"(f) (a) with {profile.capped_datagram} B datagrams", "MB/s", whole,
                 1, big=big, max_datagram=profile.capped_datagram, quic_only=True),
    ]


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed cert (SAN 127.0.0.1, ::1, localhost) and key as PEM files: (cert, key)."""
    from quicstore.certs import generate_self_signed

    cert_pem, key_pem = generate_self_signed(now=datetime.datetime.now(datetime.UTC))
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key
