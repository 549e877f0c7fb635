"""The datagram size search (RFC 8899) against simulated paths."""

from __future__ import annotations

import asyncio
import os

from hypothesis import given
from hypothesis import strategies as st

from quicstore.client.client import Client
from quicstore.transport import compat
from quicstore.transport.pmtud import (
    BASE_SIZE,
    MAX_PROBES,
    RAISE_INTERVAL,
    SEARCH_RESOLUTION,
    PmtuSearch,
)
from tools.impair_proxy import ImpairmentConfig, start_proxy


def run(search: PmtuSearch, path_limit: int, now: float = 0.0, lossy: set[int] | None = None):  # type: ignore[no-untyped-def]
    """Drive the search against a path that drops datagrams above ``path_limit``; probes
    numbered in ``lossy`` are also dropped (random loss)."""
    count = 0
    while (size := search.next_probe(now)) is not None:
        count += 1
        assert count < 200, "search does not end"
        if size <= path_limit and count not in (lossy or set()):
            search.on_probe_acknowledged(size, now)
        else:
            search.on_probe_lost(size, now)
        now += 0.01
    return count


def test_loopback_is_found_with_one_probe() -> None:
    search = PmtuSearch(ceiling=65000)
    assert run(search, path_limit=65000) == 1
    assert search.confirmed == 65000 and not search.searching


def test_ethernet_path_under_a_jumbo_route_settles_near_1500() -> None:
    search = PmtuSearch(ceiling=8972)
    probes = run(search, path_limit=1472)
    assert 1472 - SEARCH_RESOLUTION < search.confirmed <= 1472
    assert probes <= MAX_PROBES * 12


@given(st.integers(BASE_SIZE, 65000), st.integers(BASE_SIZE, 65000), st.sets(st.integers(1, 60)))
def test_never_confirms_what_the_path_drops_and_gets_close(
    ceiling: int, limit: int, lossy: set[int]
) -> None:
    search = PmtuSearch(ceiling=ceiling)
    run(search, path_limit=limit, lossy=lossy)
    assert BASE_SIZE <= search.confirmed <= max(BASE_SIZE, min(ceiling, limit))
    # Random loss can cost precision (a size lost MAX_PROBES times is refused) but never
    # lets the search confirm too much; without loss it ends within the resolution.
    if not lossy:
        assert min(ceiling, limit) - search.confirmed < SEARCH_RESOLUTION


def test_one_lost_probe_is_retried_not_taken_as_too_large() -> None:
    search = PmtuSearch(ceiling=9000)
    assert search.next_probe(0.0) == 9000
    search.on_probe_lost(9000, 0.0)
    assert search.next_probe(0.1) == 9000
    search.on_probe_acknowledged(9000, 0.2)
    assert search.confirmed == 9000


def test_search_starts_again_after_the_raise_interval() -> None:
    search = PmtuSearch(ceiling=9000)
    run(search, path_limit=1500)
    assert search.next_probe(RAISE_INTERVAL / 2) is None
    assert search.next_probe(RAISE_INTERVAL + 1) is not None


# --- on real connections ---------------------------------------------------------------


async def test_loopback_connection_reaches_the_route_size(gateway, client) -> None:  # type: ignore[no-untyped-def]
    body = os.urandom(3 * 1024 * 1024)
    await client.put("data", "pmtu", body)
    assert await client.get("data", "pmtu") == body
    quic = (await client.connect()).driver.quic
    assert quic.pmtu is not None and quic.pmtu.confirmed == 65000
    assert compat.path_estimate(quic).max_datagram_size == 65000
    server_quics = [s.quic for s in gateway.gateway.sessions]
    assert server_quics and all(q._max_datagram_size == 65000 for q in server_quics)


async def test_a_path_narrower_than_the_route_is_found_and_data_flows(gateway) -> None:  # type: ignore[no-untyped-def]
    """The proxy silently drops datagrams above 1400 bytes although both routes say 65000
    (a black hole for large packets): probes find the limit, and the transfer, which
    would stall at 65000-byte datagrams, completes."""
    proxy = await start_proxy(
        ImpairmentConfig(max_datagram=1400, lifetime_s=120),
        ("127.0.0.1", 0),
        ("127.0.0.1", gateway.port),
    )
    try:
        host, port = proxy.address[:2]
        body = os.urandom(2 * 1024 * 1024)
        async with Client(
            f"quicstore://{host}:{port}", ca_file=gateway.tls.cert_file, server_name="localhost"
        ) as c:
            await asyncio.wait_for(c.put("data", "narrow", body), 60)
            assert await asyncio.wait_for(c.get("data", "narrow"), 60) == body
            quic = (await c.connect()).driver.quic
            assert quic.pmtu is not None
            # The client's probes are judged as its packets are acknowledged: requests
            # keep it sending until its search is over too (bounded).
            for _ in range(200):
                if not quic.pmtu.searching:
                    break
                await c.stat("data", "narrow")
            assert 1400 - SEARCH_RESOLUTION < quic.pmtu.confirmed <= 1400
            sizes = [s.quic._max_datagram_size for s in gateway.gateway.sessions]
            assert sizes and all(1400 - SEARCH_RESOLUTION < size <= 1400 for size in sizes)
        assert proxy.counters.down.datagrams_too_large > 0  # probes above 1400 were dropped
        # Lost probes are not congestion: the connection counted no lost packets for them.
        assert quic.packets_lost == 0
    finally:
        await proxy.close()


async def test_search_off_trusts_the_route_once_the_handshake_is_confirmed(gateway) -> None:  # type: ignore[no-untyped-def]
    async with Client(gateway.url, ca_file=gateway.tls.cert_file, pmtu_discovery=False) as c:
        await c.put("data", "k", b"x" * 100_000)
        quic = (await c.connect()).driver.quic
        assert quic.pmtu is not None and quic.pmtu.probes_sent == 0
        assert quic._max_datagram_size == 65000
