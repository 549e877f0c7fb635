"""UDP helpers: datagram sizing, GSO grouping, GRO splitting."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from quicstore.transport.udp import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    QUIC_MIN_DATAGRAM,
    datagram_size_for,
    gso_batches,
    split_coalesced,
)


@given(st.lists(st.integers(1, 2000), max_size=200))
def test_gso_batches_keep_order_and_obey_the_kernel_rules(sizes: list[int]) -> None:
    datagrams = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    batches = gso_batches(datagrams)
    assert [d for batch, _ in batches for d in batch] == datagrams
    for batch, segment in batches:
        assert len(batch) <= GSO_MAX_SEGMENTS
        assert len(batch) == 1 or sum(map(len, batch)) <= GSO_MAX_BYTES
        assert all(len(d) == segment for d in batch[:-1])
        assert len(batch[-1]) <= segment


def test_gso_batches_group_a_burst_of_full_packets() -> None:
    burst = [b"x" * 1452] * 100 + [b"y" * 300]
    batches = gso_batches(burst)
    assert [len(b) for b, _ in batches] == [44, 44, 13]  # 44 * 1452 <= 65000 < 45 * 1452
    assert batches[-1][0][-1] == b"y" * 300


@given(st.binary(min_size=1, max_size=5000), st.integers(0, 1500))
def test_split_coalesced_restores_the_datagrams(data: bytes, segment: int) -> None:
    parts = split_coalesced(memoryview(data), segment)
    assert b"".join(parts) == data
    if segment:
        assert all(len(p) == segment for p in parts[:-1]) and len(parts[-1]) <= segment


def test_datagram_size_follows_the_route_and_the_cap() -> None:
    loopback = datagram_size_for(socket.AF_INET, ("127.0.0.1", 9), None)
    assert loopback == 65000  # lo's MTU is 65536
    assert datagram_size_for(socket.AF_INET, ("127.0.0.1", 9), 1452) == 1452
    assert datagram_size_for(socket.AF_INET, ("127.0.0.1", 9), 100) == QUIC_MIN_DATAGRAM
