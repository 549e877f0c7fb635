"""A gateway killed while responses are in flight, for the tests of several gateways over one
store (tests/client/test_client.py over a shared disk root, tests/e2e/test_azure_gateways.py
over Azurite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from quicstore.client.client import Client
from quicstore.client.sinks import MemorySink

from .serverproc import GatewayProcess


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
