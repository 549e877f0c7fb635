"""Byte-range arithmetic for fan-out reads: aligned parts, and coverage of what has arrived."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """``length`` bytes from ``start``."""

    start: int
    length: int

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.start + self.length


def align_down(value: int, block_size: int) -> int:
    """``value`` rounded down to a multiple of ``block_size``."""
    return value - value % block_size


def aligned_span(start: int, end: int, size: int, block_size: int) -> Span:
    """The smallest span covering ``[start, end)`` whose ends are block boundaries or the
    object's end (``size``), so that all of it can be verified."""
    lo = align_down(start, block_size)
    hi = min(size, -(-end // block_size) * block_size)
    return Span(lo, max(0, hi - lo))


def split_parts(span: Span, part_size: int, block_size: int) -> list[Span]:
    """``span`` cut into consecutive parts of ``part_size`` bytes (rounded up to whole
    blocks); every cut falls on a block boundary."""
    step = max(block_size, -(-part_size // block_size) * block_size)
    return [Span(s, min(step, span.end - s)) for s in range(span.start, span.end, step)]


class Coverage:
    """Disjoint, sorted byte intervals: which parts of a range have been verified."""

    __slots__ = ("_spans",)

    def __init__(self) -> None:
        self._spans: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` covered."""
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        placed = False
        for s, e in self._spans:
            if e < start or s > end:
                if s > end and not placed:
                    merged.append((start, end))
                    placed = True
                merged.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        if not placed:
            merged.append((start, end))
        merged.sort()
        self._spans = merged

    def missing(self, start: int, end: int) -> list[Span]:
        """The gaps of ``[start, end)`` not yet covered, in order."""
        gaps: list[Span] = []
        pos = start
        for s, e in self._spans:
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                gaps.append(Span(pos, s - pos))
            pos = max(pos, e)
        if pos < end:
            gaps.append(Span(pos, end - pos))
        return gaps

    def covered(self) -> int:
        """Total bytes covered."""
        return sum(e - s for s, e in self._spans)
