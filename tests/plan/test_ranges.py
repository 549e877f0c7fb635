"""Range arithmetic (quicstore.plan.ranges)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from quicstore.plan.ranges import Coverage, Span, aligned_span, split_parts


def test_aligned_span() -> None:
    assert aligned_span(5, 9, size=100, block_size=4) == Span(4, 8)
    assert aligned_span(98, 100, size=100, block_size=8) == Span(96, 4)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**5), st.integers(64, 4096))
def test_parts_cover_the_span_on_block_boundaries(
    start: int, length: int, part: int, block: int
) -> None:
    start -= start % block
    part = max(part, block)
    span = Span(start, length)
    parts = split_parts(span, part, block)
    assert sum(p.length for p in parts) == length
    for a, b in itertools.pairwise(parts):
        assert a.end == b.start and a.end % block == 0


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=20))
def test_coverage_matches_a_set_of_bytes(intervals: list[tuple[int, int]]) -> None:
    coverage = Coverage()
    truth: set[int] = set()
    for start, length in intervals:
        coverage.add(start, start + length)
        truth.update(range(start, start + length))
    assert coverage.covered() == len(truth)
    missing = {i for gap in coverage.missing(0, 300) for i in range(gap.start, gap.end)}
    assert missing == set(range(300)) - truth
