"""Bench client over the quicstore SDK (quicstore/1 on one QUIC connection).

Spec keys besides the driver's: ``bucket``; ``part_size`` and ``min_parts``/``max_parts``
(fan-out and prefetch depth; ``max_parts`` 1 with a huge part is a single-stream GET);
``max_datagram_size`` (cap, bytes, or null for the route's MTU). Bodies are counted and
discarded, or written to the sink when the orchestrator checks a sha256.

Usage: ``python -m tools.bench.clients.quicstore SPEC.json`` (see tools.bench.driver).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from quicstore.client.client import Client, ClientConfig
from quicstore.plan.prefetch import PrefetchConfig
from quicstore.store.base import ObjectInfo
from tools.bench.driver import Fetcher, Req, main


class _Counting:
    """A sink that counts bytes (and copies them to a file when verifying)."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.count = 0

    def write(self, offset: int, data: Any, release: Any) -> bool:
        self.count += len(data)
        if self.out is not None:
            self.out.seek(offset)
            self.out.write(data)
        return True

    async def flush(self) -> None:
        return None


class QuicstoreFetcher:
    """One quicstore Client (one connection, fan-out GETs)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        prefetch = PrefetchConfig()
        for name in ("part_size", "min_parts", "max_parts"):
            if spec.get(name):
                prefetch = replace(prefetch, **{name: int(spec[name])})
        self.bucket = spec.get("bucket", "bench")
        self.client = Client(
            f"quicstore://{spec['host']}:{spec['port']}",
            ClientConfig(ca_file=Path(spec["cafile"]), prefetch=prefetch,
                         max_datagram_size=spec.get("max_datagram_size")),
        )

    async def connect(self) -> None:
        await self.client.connect()

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        key = req.path.lstrip("/")
        counting = _Counting(sink)

        def make_sink(info: ObjectInfo, size: int) -> _Counting:
            return counting

        if req.start is None:
            await self.client.get_to(self.bucket, key, make_sink)  # type: ignore[arg-type]
        else:
            assert req.end is not None
            await self.client.get_to(self.bucket, key, make_sink,  # type: ignore[arg-type]
                                     offset=req.start, length=req.end - req.start + 1)
        return counting.count

    async def close(self) -> None:
        await self.client.close()


def _make(spec: dict[str, Any]) -> Fetcher:
    return QuicstoreFetcher(spec)


if __name__ == "__main__":
    main(_make)
