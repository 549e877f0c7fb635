"""A gateway killed while responses are in flight, for the tests of several gateways over one
store (tests/client/test_client.py over a shared disk root, tests/e2e/test_azure_gateways.py
over Azurite)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from quicstore.client.client import Client
from quicstore.client.sinks import MemorySink

from .serverproc import GatewayProcess


@contextlib.asynccontextmanager
async def gateways_sharing_objects(
    root: Path, extra: list[str]
) -> AsyncIterator[tuple[list[GatewayProcess], Client, dict[str, bytes]]]:
    """Three gateways (``quicstore serve`` with ``extra``, certificate under ``root``), one
    client given all three URLs, and twelve objects of about 1.5 MB PUT into ``shared``
    through it, spread over all three: ``(gateways, client, bodies by key)``. Every gateway
    is killed on exit."""
    gateways = [GatewayProcess(root, extra=extra).start() for _ in range(3)]
    try:
        urls = [g.url for g in gateways]
        bodies = {f"obj-{i}": os.urandom(1_500_000 + i) for i in range(12)}
        async with Client(urls, ca_file=gateways[0].ca, silence_timeout=2.0) as client:
            for key, body in bodies.items():
                await client.put("shared", key, body)
            assert all(e.requests > 0 for e in client.endpoints)  # spread over all three
            yield gateways, client, bodies
    finally:
        for g in gateways:
            g.kill()


async def get_all_while_one_gateway_dies(
    client: Client, bucket: str, keys: Iterable[str], victim: GatewayProcess
) -> dict[str, MemorySink]:
    """GET every key of ``keys`` from ``bucket`` at once, each into a sink of its own;
    ``victim`` is SIGKILLed as the first response bytes arrive, so that requests are in flight
    on it. Returns the sinks by key, once every GET finished."""
    first_bytes = asyncio.Event()

    class KillOnFirstBytes(MemorySink):
        def write(self, offset: int, data: memoryview, release: object) -> bool:
            if not first_bytes.is_set():
                first_bytes.set()
                victim.kill()
            return super().write(offset, data, release)  # type: ignore[arg-type]

    sinks: dict[str, MemorySink] = {}

    def sink_for(key: str) -> Callable[[object, int], MemorySink]:
        def make(info: object, size: int) -> MemorySink:
            sinks[key] = KillOnFirstBytes(bytearray(size))
            return sinks[key]

        return make

    await asyncio.gather(*(client.get_to(bucket, k, sink_for(k)) for k in keys))
    assert first_bytes.is_set()
    return sinks
