"""Bounded memory under concurrent load (slow: moves 4 GiB)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from quicstore.client.client import Client
from quicstore.store.base import ObjectInfo

from .serverproc import GatewayProcess

MIB = 1024 * 1024
RSS_BOUND_MIB = 256
"""The gateway's memory bound for this load: Python and its libraries (~60 MiB), the read
buffer pool (64 MiB at most), QUIC send buffers (8 MiB per connection x 8) and receive-side
state; see the gateway issue's note."""


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def write(self, offset: int, data: Any, release: Any) -> bool:
        self.count += len(data)
        return True

    async def flush(self) -> None:
        return None


@pytest.mark.slow
async def test_64_gets_of_64_mib_over_8_connections_stay_under_the_bound(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    try:
        async with Client(gw.url, ca_file=gw.ca) as loader:
            await loader.put("data", "big", os.urandom(64 * MIB))
        baseline = gw.peak_rss_kib() // 1024
        clients = [Client(gw.url, ca_file=gw.ca) for _ in range(8)]

        async def fetch(client: Client) -> int:
            counter = Counter()

            def sink(info: ObjectInfo, size: int) -> Counter:
                return counter

            await client.get_to("data", "big", sink)  # type: ignore[arg-type]
            return counter.count

        got = await asyncio.wait_for(
            asyncio.gather(*(fetch(c) for c in clients for _ in range(8))), timeout=600
        )
        assert got == [64 * MIB] * 64
        peak = gw.peak_rss_kib() // 1024
        print(f"gateway peak RSS {peak} MiB (after upload {baseline} MiB)")
        assert peak < RSS_BOUND_MIB
        for client in clients:
            await client.close()
    finally:
        assert gw.stop() == 0
