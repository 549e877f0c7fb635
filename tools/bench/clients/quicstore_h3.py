"""Bench client: HTTP/3 against the quicstore gateway, with quicstore's HTTP/3 client
(quicstore.client.http3: aioquic's H3Connection over quicstore's transport).

The gateway serves the same store on the same port to ``h3``; the path is ``/BUCKET/KEY``.
Bodies stream through a callback and are counted (or written to the sink when the
orchestrator checks a sha256). Spec keys besides the driver's: ``bucket``,
``max_datagram_size`` (cap, bytes, or null for the route's MTU).

Usage: ``python -m tools.bench.clients.quicstore_h3 SPEC.json`` (see tools.bench.driver).
"""

from __future__ import annotations

from typing import Any, BinaryIO

from quicstore.client.http3 import Http3Client
from tools.bench.driver import Fetcher, Req, main


class QuicstoreH3Fetcher:
    """One HTTP/3 connection to the gateway."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.bucket = spec.get("bucket", "bench")
        self.client: Http3Client | None = None

    async def connect(self) -> None:
        spec = self.spec
        self.client = await Http3Client.connect(
            spec["host"],
            int(spec["port"]),
            ca_file=spec["cafile"],
            server_name="localhost",
            max_datagram_size=spec.get("max_datagram_size"),
        )

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        assert self.client is not None
        count = 0
        offset = req.start or 0

        def on_data(data: bytes) -> None:
            nonlocal count
            if sink is not None:
                sink.seek(offset + count)
                sink.write(data)
            count += len(data)

        rng = req.range_header()
        response = await self.client.request(
            "GET",
            f"/{self.bucket}/{req.path.lstrip('/')}",
            headers=[("range", rng)] if rng else [],
            on_data=on_data,
        )
        expected = 206 if rng else 200
        if response.status != expected:
            raise RuntimeError(f"GET {req.path}: status {response.status}, wanted {expected}")
        return count

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def _make(spec: dict[str, Any]) -> Fetcher:
    return QuicstoreH3Fetcher(spec)


if __name__ == "__main__":
    main(_make)
