"""The prefetch planner (quicstore.plan.prefetch): a pure function."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quicstore.plan.prefetch import PathEstimate, PrefetchConfig, plan_prefetch

MIB = 1024 * 1024
CONFIG = PrefetchConfig(part_size=4 * MIB, min_parts=2, max_parts=64, max_bytes=128 * MIB)


def estimate(cwnd: int, rtt: float = 0.02) -> PathEstimate:
    return PathEstimate(
        congestion_window=cwnd,
        bytes_in_flight=0,
        smoothed_rtt=rtt,
        min_rtt=rtt,
        packets_lost=0,
        max_datagram_size=1350,
    )


def plan(
    cwnd: int,
    outstanding: int = 0,
    remaining: int = 1000,
    rate: float = 0.0,
    rtt: float = 0.02,
    config: PrefetchConfig = CONFIG,
) -> int:
    return plan_prefetch(
        estimate(cwnd, rtt),
        outstanding_parts=outstanding,
        remaining_parts=remaining,
        delivery_rate=rate,
        config=config,
    )


def test_small_window_keeps_the_minimum_outstanding() -> None:
    assert plan(cwnd=14_000) == 2
    assert plan(cwnd=14_000, outstanding=2) == 0


def test_depth_follows_the_congestion_window() -> None:
    assert plan(cwnd=8 * MIB) == 6  # gain 3 x 8 MiB / 4 MiB parts
    assert plan(cwnd=32 * MIB) == 24
    # a window that shrank (loss): nothing new until outstanding parts drain
    assert plan(cwnd=1 * MIB, outstanding=10) == 0


def test_measured_rate_times_rtt_counts_too() -> None:
    # 400 MB/s x 50 ms = 20 MB per round trip: 3 x 20 MB / 4 MiB -> 15 parts
    assert plan(cwnd=100_000, rate=400e6, rtt=0.05) == 15


def test_draining_parts_make_room_for_new_requests() -> None:
    """Outstanding parts that are mostly received no longer hold the pipe: the next part is
    requested while the last bytes of the current ones travel."""
    full = plan_prefetch(
        estimate(8 * MIB),
        outstanding_parts=6,
        remaining_parts=100,
        delivery_rate=0,
        config=CONFIG,
        outstanding_bytes=6 * 4 * MIB,
    )
    drained = plan_prefetch(
        estimate(8 * MIB),
        outstanding_parts=6,
        remaining_parts=100,
        delivery_rate=0,
        config=CONFIG,
        outstanding_bytes=6 * MIB,
    )
    assert full == 0
    assert drained == 5  # (24 MiB target - 6 MiB outstanding) / 4 MiB parts


def test_memory_and_part_bounds() -> None:
    assert plan(cwnd=10**10) == 32  # max_bytes 128 MiB / 4 MiB
    assert plan(cwnd=10**10, config=PrefetchConfig(max_parts=8)) == 8
    assert plan(cwnd=10**10, remaining=3) == 3
    assert plan(cwnd=10**10, remaining=0) == 0


@given(
    st.integers(1, 10**10),
    st.integers(0, 100),
    st.integers(0, 1000),
    st.floats(0, 1e10, allow_nan=False),
    st.floats(0, 2, allow_nan=False),
)
def test_plan_is_always_within_bounds(
    cwnd: int, outstanding: int, remaining: int, rate: float, rtt: float
) -> None:
    n = plan(cwnd, outstanding, remaining, rate, rtt)
    assert 0 <= n <= remaining
    assert outstanding + n <= max(CONFIG.max_parts, outstanding)
    if remaining and outstanding == 0:
        assert n >= min(CONFIG.min_parts, remaining)


@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_more_window_never_means_fewer_parts(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert plan(small) <= plan(large)
