"""Bench client over aioquic's stock HTTP/3 example client (``HttpClient`` of http3_client.py).

The protocol class is imported, unmodified, from the ``examples/`` folder of the aioquic
source distribution (spec key ``examples_dir``, extracted at run time, never vendored). The
configuration mirrors what http3_client.py's ``__main__`` builds: ALPN h3, reno, CA file,
``max_datagram_size`` (bytes of UDP payload; spec key, null for aioquic's default of 1200).
All requests share one QUIC connection.

Usage: ``python -m tools.bench.clients.aioquic_h3 SPEC.json`` (see tools.bench.driver).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, BinaryIO

from tools.bench.driver import Fetcher, Req, main


class StockH3Fetcher:
    """One QUIC connection driven by the example's HttpClient."""

    def __init__(self, spec: dict[str, Any]) -> None:
        sys.path.insert(0, spec["examples_dir"])
        import http3_client  # the stock example module
        from aioquic.h3.connection import H3_ALPN
        from aioquic.quic.configuration import QuicConfiguration

        self._mod = http3_client
        self._host, self._port = spec["host"], int(spec["port"])
        self._authority = f"{self._host}:{self._port}"
        config = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, congestion_control_algorithm="reno"
        )
        if spec.get("max_datagram_size"):
            config.max_datagram_size = int(spec["max_datagram_size"])
        config.load_verify_locations(spec["cafile"])
        self._config = config
        self._cm: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._client: Any = None

    async def connect(self) -> None:
        from aioquic.asyncio.client import connect

        self._cm = connect(
            self._host,
            self._port,
            configuration=self._config,
            create_protocol=self._mod.HttpClient,
        )
        self._client = await self._cm.__aenter__()

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        from aioquic.h3.events import DataReceived, HeadersReceived

        rng = req.range_header()
        events = await self._client.get(
            f"https://{self._authority}{req.path}", headers={"range": rng} if rng else None
        )
        status = b""
        n = 0
        for ev in events:
            if isinstance(ev, HeadersReceived):
                status = dict(ev.headers).get(b":status", status)
            elif isinstance(ev, DataReceived):
                n += len(ev.data)
                if sink is not None:
                    sink.write(ev.data)
        want = b"206" if rng else b"200"
        if status != want:
            raise RuntimeError(f"GET {req.path}: status {status!r}, want {want!r}")
        return n

    async def close(self) -> None:
        if self._cm is not None:
            self._client.close()
            await self._cm.__aexit__(None, None, None)


def _make(spec: dict[str, Any]) -> Fetcher:
    return StockH3Fetcher(spec)


if __name__ == "__main__":
    main(_make)
