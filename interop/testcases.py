"""The test cases: what each one serves, how endpoints are started, and what must be verified.

Each ``TestCase`` says which files to create in WWW (deterministic from a seed), which ALPN to
use, how REQUESTS map onto connections, whether the server must send a Retry, whether the path
goes through the impairment proxy (``tools/impair_proxy.py``), the time bound, and which
oracle checks (``interop.oracles.CHECKS``) apply on top of "every download is byte-identical".
Sizes are in bytes, times in seconds.
"""

from __future__ import annotations

import dataclasses
import random
import string
from pathlib import Path

from tools.impair_proxy import ImpairmentConfig

KIB = 1024
MIB = 1024 * 1024

HQ_OR_H3 = "hq-interop|h3"
"""ALPN policy: hq-interop when both endpoints speak it, else h3."""


@dataclasses.dataclass(frozen=True)
class ServedFile:
    """One file in WWW, and what the client must end up with."""

    name: str
    size: int

    def expected(self, data: bytes, byte_range: tuple[int, int] | None) -> bytes:
        """What the download must equal: the whole file, or ``data[first:last + 1]``."""
        if byte_range is None:
            return data
        return data[byte_range[0] : byte_range[1] + 1]


@dataclasses.dataclass(frozen=True)
class TestCase:
    """One interop test case (see the module docstring)."""

    name: str
    description: str
    sizes: tuple[int, ...]
    """Sizes of the files to serve, in bytes (named ``<name>-NNNN.bin`` / ``.txt``)."""
    alpn: str = HQ_OR_H3
    """``HQ_OR_H3`` or ``"h3"``."""
    connections: str = "one"
    """``one``, ``resume`` (first URL, then the rest on a resumed connection) or ``each``."""
    checks: tuple[str, ...] = ()
    """Oracle checks from ``interop.oracles.CHECKS``."""
    impairment: ImpairmentConfig | None = None
    """The impairment proxy's settings, or ``None`` for a direct (tapped) path."""
    byte_range: tuple[int, int] | None = None
    """rangedget: (first, last) byte offsets, inclusive, requested of every file."""
    timeout_s: float = 30.0
    """Bound on the client's run (the whole cell adds server start-up and checks)."""
    quick: bool = True
    """Part of ``--quick``."""

    def files(self, text: bool = False) -> list[ServedFile]:
        """The files to serve (names depend on ``text``: ``.txt`` for text payloads)."""
        ext = "txt" if text else "bin"
        return [ServedFile(f"{self.name}-{i:04d}.{ext}", size) for i, size in enumerate(self.sizes)]

    def seed(self) -> int:
        """The test case's seed for file contents (stable across runs)."""
        return sum((i + 1) * ord(c) for i, c in enumerate(self.name))

    def make_www(self, www: Path, text: bool = False) -> dict[str, bytes]:
        """Write the files into ``www``; returns name -> content."""
        rng = random.Random(self.seed())
        www.mkdir(parents=True, exist_ok=True)
        out: dict[str, bytes] = {}
        alphabet = (string.ascii_letters + string.digits).encode()
        for f in self.files(text):
            if text:
                data = bytes(alphabet[b % len(alphabet)] for b in rng.randbytes(f.size))
            else:
                data = rng.randbytes(f.size)
            (www / f.name).write_bytes(data)
            out[f.name] = data
        return out

    @property
    def range_header(self) -> str | None:
        """The ``Range`` header value for rangedget."""
        if self.byte_range is None:
            return None
        return f"bytes={self.byte_range[0]}-{self.byte_range[1]}"


def _multiplexing_sizes(count: int) -> tuple[int, ...]:
    rng = random.Random(8)
    return tuple(rng.randint(32, 1024) for _ in range(count))


TESTCASES: tuple[TestCase, ...] = (
    TestCase(
        "handshake",
        "one small file over one connection, ALPN hq-interop where both speak it, else h3",
        (1 * KIB,),
        checks=("one_connection", "no_retry", "version_1", "alpn"),
    ),
    TestCase(
        "transfer",
        "three files, 10 MiB in total, over one connection",
        (2 * MIB, 3 * MIB, 5 * MIB),
        checks=("one_connection", "alpn"),
        timeout_s=90.0,
    ),
    TestCase(
        "multiplexing",
        "600 files of 32 B-1 KiB over one connection (streams beyond the peer's limit)",
        _multiplexing_sizes(600),
        checks=("one_connection", "alpn"),
        timeout_s=90.0,
    ),
    TestCase(
        "retry",
        "the server sends a Retry; the client's next Initial carries its token",
        (4 * KIB,),
        checks=("one_connection", "retry"),
    ),
    TestCase(
        "resumption",
        "two connections; the second resumes the first one's session ticket (PSK, no Certificate)",
        (4 * KIB, 4 * KIB, 4 * KIB),
        connections="resume",
        checks=("two_connections", "resumption"),
        timeout_s=45.0,
    ),
    TestCase(
        "zerortt",
        "two connections; the second sends its requests in 0-RTT and the server accepts them",
        (4 * KIB, 4 * KIB, 4 * KIB),
        connections="resume",
        checks=("two_connections", "resumption", "zerortt"),
        timeout_s=45.0,
    ),
    TestCase(
        "http3",
        "three files over HTTP/3 (ALPN h3)",
        (8 * KIB, 32 * KIB, 64 * KIB),
        alpn="h3",
        checks=("one_connection", "alpn"),
    ),
    TestCase(
        "chacha20",
        "one file; only TLS_CHACHA20_POLY1305_SHA256 offered and chosen",
        (64 * KIB,),
        checks=("one_connection", "chacha20"),
    ),
    TestCase(
        "keyupdate",
        "one 2 MiB file; the client updates its keys after the handshake, the server follows",
        (2 * MIB,),
        checks=("one_connection", "keyupdate"),
        timeout_s=60.0,
    ),
    TestCase(
        "v2",
        "one file over QUIC v2 (RFC 9369; compatible negotiation from v1 or v2 from the start)",
        (64 * KIB,),
        checks=("one_connection", "version_2"),
    ),
    TestCase(
        "rangedget",
        "GET of a 256 KiB file with Range: bytes=1000-100999; exactly those bytes, status 206",
        (256 * KIB,),
        alpn="h3",
        byte_range=(1000, 100_999),
        checks=("one_connection", "alpn"),
    ),
    TestCase(
        "longrtt",
        "two files through the impairment proxy with 150 ms each way (RTT 300 ms)",
        (64 * KIB, 256 * KIB),
        impairment=ImpairmentConfig(delay_ms=150.0, seed=3, lifetime_s=150.0),
        checks=("one_connection", "long_rtt"),
        timeout_s=60.0,
        quick=False,
    ),
    TestCase(
        "handshakeloss",
        "12 files of 1 KiB, one connection each, 20 % loss each way (seeded)",
        (1 * KIB,) * 12,
        connections="each",
        impairment=ImpairmentConfig(loss=0.20, seed=5, lifetime_s=330.0),
        checks=("each_connection", "loss_applied"),
        timeout_s=300.0,
        quick=False,
    ),
    TestCase(
        "transferloss",
        "one 2 MiB file over one connection, 2 % loss each way (seeded)",
        (2 * MIB,),
        # seed 16: the first drop falls on the 8th client and the 10th server datagram, so loss
        # happens even when a sender needs only a few dozen (64 KB) datagrams for 2 MiB
        impairment=ImpairmentConfig(loss=0.02, seed=16, lifetime_s=210.0),
        checks=("one_connection", "loss_applied"),
        timeout_s=180.0,
        quick=False,
    ),
)

BY_NAME = {tc.name: tc for tc in TESTCASES}
NAMES = tuple(tc.name for tc in TESTCASES)
