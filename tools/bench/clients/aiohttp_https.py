"""Bench client over aiohttp's ClientSession (HTTPS over TCP, HTTP/1.1 keep-alive).

The TCPConnector's ``limit`` equals the workload concurrency, so ``concurrency`` requests run
on that many warm TCP+TLS connections (the driver warms all of them before the window).
Bodies are read in 256 KiB chunks (spec key ``chunk``, bytes) and discarded, or written to
the sink when the orchestrator checks a sha256.

Usage: ``python -m tools.bench.clients.aiohttp_https SPEC.json`` (see tools.bench.driver).
"""

from __future__ import annotations

import ssl
from typing import Any, BinaryIO

import aiohttp

from tools.bench.driver import Fetcher, Req, main


class AiohttpFetcher:
    """A ClientSession with ``concurrency`` pooled connections."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._base = f"https://{spec['host']}:{spec['port']}"
        self._limit = int(spec["concurrency"])
        self._chunk = int(spec.get("chunk", 256 * 1024))
        self._ssl = ssl.create_default_context(cafile=spec["cafile"])
        self._session: aiohttp.ClientSession | None = None

    async def connect(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        assert self._session is not None
        rng = req.range_header()
        headers = {"Range": rng} if rng else None
        async with self._session.get(self._base + req.path, headers=headers) as resp:
            want = 206 if rng else 200
            if resp.status != want:
                raise RuntimeError(f"GET {req.path}: status {resp.status}, want {want}")
            n = 0
            async for chunk in resp.content.iter_chunked(self._chunk):
                n += len(chunk)
                if sink is not None:
                    sink.write(chunk)
            return n

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _make(spec: dict[str, Any]) -> Fetcher:
    return AiohttpFetcher(spec)


if __name__ == "__main__":
    main(_make)
