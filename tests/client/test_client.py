"""The SDK's behaviours beyond plain round trips (quicstore.client.client, sync, fanout)."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import quicstore
from quicstore.client.client import (
    Client,
    InsecureConnectionWarning,
    parse_endpoints,
    parse_url,
)
from quicstore.client.sync import ShardDataset, SyncClient
from quicstore.plan.prefetch import PrefetchConfig
from quicstore.server.app import RunningGateway

from ..e2e.gateway_failover import gateways_sharing_objects, get_all_while_one_gateway_dies

MIB = 1024 * 1024


def test_parse_url() -> None:
    assert parse_url("quicstore://h:5/b/k/x") == ("h", 5, "b", "k/x")
    assert parse_url("quicstore://[::1]:7/b") == ("::1", 7, "b", None)
    assert parse_url("127.0.0.1") == ("127.0.0.1", 4433, None, None)
    with pytest.raises(ValueError):
        parse_url("https://h/b")


def test_parse_endpoints() -> None:
    assert parse_endpoints("quicstore://a:1,b:2,[::1]:3/bucket") == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
    ]
    assert parse_endpoints(["quicstore://a:1", "b"]) == [("a", 1), ("b", 4433)]
    with pytest.raises(ValueError):
        parse_endpoints([])
    with pytest.raises(ValueError):
        parse_endpoints("https://a:1,b:2")


async def test_three_gateways_one_killed_mid_run(tmp_path: Path) -> None:
    """Three gateways over one store; a client spreads its requests over them; one
    gateway is killed (SIGKILL) mid-run: no error reaches the caller and every byte read
    back is the byte written."""
    root = tmp_path / "shared"
    async with gateways_sharing_objects(root, ["--open"]) as (gateways, client, bodies):
        # All twelve GETs at once (four per gateway); gateway 1 dies as the first
        # response bytes arrive, so requests are in flight on it.
        sinks = await get_all_while_one_gateway_dies(client, "shared", bodies, gateways[1])
        for key, body in bodies.items():
            assert bytes(sinks[key].buffer) == body, key
        # And the survivors keep serving.
        for key, body in bodies.items():
            assert await client.get("shared", key) == body
        survivors = [e for e in client.endpoints if e.port != gateways[1].port]
        assert all(e.session is not None and e.session.usable for e in survivors)


async def test_put_from_an_async_iterator_and_a_file(client: Client, tmp_path: Path) -> None:
    chunks = [os.urandom(100_000) for _ in range(7)]

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    info = await client.put("data", "streamed", stream())
    assert info.size == 700_000
    assert await client.get("data", "streamed") == b"".join(chunks)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 300_000)
    await client.put("data", "from-file", path)
    out = tmp_path / "out.bin"
    result = await client.get_file("data", "from-file", out)
    assert out.read_bytes() == b"x" * 300_000 and result.length == 300_000
    buffer = bytearray(1000)
    await client.get_into("data", "from-file", buffer, offset=10, length=1000)
    assert bytes(buffer) == b"x" * 1000


async def test_a_length_without_an_offset_reads_from_the_start(
    client: Client, tmp_path: Path
) -> None:
    body = os.urandom(300_000)
    await client.put("data", "head", body)
    assert bytes(await client.get("data", "head", length=70_000)) == body[:70_000]
    result, data = await client.get_with_info("data", "head", length=1)
    assert (result.offset, result.length, bytes(data)) == (0, 1, body[:1])
    out = tmp_path / "head.bin"
    await client.get_file("data", "head", out, length=200_000)
    assert out.read_bytes() == body[:200_000]


async def test_object_replaced_mid_read_fails_cleanly(client: Client) -> None:
    await client.put("data", "moving", os.urandom(24 * MIB))
    replaced = asyncio.Event()

    def progress(n: int) -> None:
        if not replaced.is_set():
            replaced.set()
            asyncio.get_running_loop().create_task(client.put("data", "moving", b"new version"))

    small_parts = Client(
        f"quicstore://{client.host}:{client.port}",
        client.config,
        prefetch=PrefetchConfig(part_size=MIB, min_parts=1, max_parts=1),
    )
    async with small_parts:
        with pytest.raises(quicstore.ObjectChanged):
            await small_parts.get_with_info("data", "moving", progress=progress)
    await replaced.wait()


async def test_insecure_warns(gateway: RunningGateway) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Client(gateway.url, insecure=True) as c:
            with pytest.raises(quicstore.NotFound):
                await c.stat("data", "nothing")
    assert any(issubclass(w.category, InsecureConnectionWarning) for w in caught)


async def test_sync_client_and_dataset_without_torch(gateway: RunningGateway) -> None:
    def work() -> tuple[bytes, list[str]]:
        with SyncClient(gateway.url, ca_file=gateway.tls.cert_file) as c:
            for i in range(6):
                c.put("data", f"sync/{i}", f"shard {i}".encode())
            keys = [o.key for o in c.list_all("data", prefix="sync/")]
            data = bytes(c.get("data", "sync/3"))
        dataset = ShardDataset(
            gateway.url,
            "data",
            keys,
            config=quicstore.ClientConfig(ca_file=gateway.tls.cert_file),
            shuffle=True,
            seed=3,
            transform=lambda s: s.key,
        )
        return data, list(dataset)

    data, seen = await asyncio.to_thread(work)
    assert data == b"shard 3"
    assert sorted(seen) == [f"sync/{i}" for i in range(6)]


async def test_a_large_get_does_not_starve_small_ones(client: Client) -> None:
    await client.put("data", "large", os.urandom(48 * MIB))
    await client.put("data", "small", b"s" * 4096)
    large = asyncio.ensure_future(client.get("data", "large"))
    latencies = []
    loop = asyncio.get_running_loop()
    for i in range(10):
        started = loop.time()
        assert await client.get("data", "small") == b"s" * 4096
        latencies.append(loop.time() - started)
        if i == 0:
            # Had the small GET queued behind the large one, the large would be done.
            assert not large.done()
    await large
    # Small GETs interleave with the large one instead of queueing behind 48 MiB.
    assert max(latencies) < 0.5, latencies
