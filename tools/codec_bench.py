"""Micro-benchmark of the sans-I/O codec: decode and encode rates (not a test).

    python tools/codec_bench.py [--seconds 1.0]

Reports, on one core:
- 1 MiB DATA frames decoded by the FrameReader when QUIC hands them over in 64 KiB and in
  1200-byte pieces (what a receiver sees), and encoded (header built, payload not copied);
- small REQUEST frames (a ranged GET with a token) and RESPONSE frames, encoded and decoded;
- CRC32C block verification of 1 MiB through RangeVerifier, for scale.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from quicstore.proto.codes import FrameType
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import (
    RequestFrame,
    ResponseFrame,
    decode_payload,
    encode_data_header,
    encode_frame,
)
from quicstore.proto.integrity import RangeVerifier, block_checksums
from quicstore.proto.messages import RequestHeader, ResponseHeader

MIB = 1 << 20


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Run ``fn`` (returning bytes processed) repeatedly for ``seconds``; return
    (operations per second, bytes per second)."""
    fn()  # warm up
    ops = 0
    total = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        total += fn()
        ops += 1
    return ops / elapsed, total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case, seconds")
    args = parser.parse_args()
    payload = os.urandom(MIB)
    wire = encode_data_header(MIB) + payload

    def decode_pieces(piece: int) -> Callable[[], int]:
        pieces = [wire[i : i + piece] for i in range(0, len(wire), piece)]

        def run() -> int:
            reader = FrameReader(65536)
            n = 0
            for p in pieces:
                for f in reader.feed(p):
                    n += len(f.data)  # type: ignore[union-attr]
            return n

        return run

    def encode_data() -> int:
        header = encode_data_header(MIB)
        return len(header) + len(payload)

    request = RequestHeader(
        op="GET",
        bucket="data",
        key="shards/train-000123.tar",
        offset=4 * MIB,
        length=MIB,
        if_match="2cf24dba5fb0a30e26e83b2ac5b9e29e",
        token="qs1." + "x" * 180 + "." + "y" * 43,
    )
    request_wire = encode_frame(RequestFrame(request))
    response = ResponseHeader(
        size=256 * MIB,
        etag="2cf24dba5fb0a30e26e83b2ac5b9e29e",
        mtime_ns=1764000000000000000,
        block_size=65536,
        sha256=bytes(32),
        offset=4 * MIB,
        length=MIB,
    )
    response_wire = encode_frame(ResponseFrame(response))
    request_payload = request_wire[3:]
    assert decode_payload(FrameType.REQUEST, request_payload) == RequestFrame(request)
    sums = block_checksums(payload, 65536)

    def verify() -> int:
        v = RangeVerifier(offset=0, length=MIB, size=MIB, block_size=65536)
        v.add_checksums(0, sums)
        v.update(payload)
        return MIB

    cases: list[tuple[str, Callable[[], int]]] = [
        ("decode 1 MiB DATA in 64 KiB pieces", decode_pieces(65536)),
        ("decode 1 MiB DATA in 1200 B pieces", decode_pieces(1200)),
        ("encode 1 MiB DATA (header, payload uncopied)", encode_data),
        (
            f"encode REQUEST ({len(request_wire)} B)",
            lambda: len(encode_frame(RequestFrame(request))),
        ),
        (
            f"decode REQUEST ({len(request_wire)} B)",
            lambda: len(FrameReader(65536).feed(request_wire)) and len(request_wire),
        ),
        (
            f"encode RESPONSE ({len(response_wire)} B)",
            lambda: len(encode_frame(ResponseFrame(response))),
        ),
        (
            f"decode RESPONSE ({len(response_wire)} B)",
            lambda: len(FrameReader(65536).feed(response_wire)) and len(response_wire),
        ),
        ("verify 1 MiB against 64 KiB block CRC32Cs", verify),
    ]
    print(f"{'case':48} {'ops/s':>12} {'MB/s':>10}")
    for name, fn in cases:
        ops, bps = rate(fn, args.seconds)
        print(f"{name:48} {ops:12,.0f} {bps / 1e6:10,.1f}")


if __name__ == "__main__":
    main()
