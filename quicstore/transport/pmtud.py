"""Datagram size search (DPLPMTUD, RFC 8899), sans I/O.

A connection starts at the size every QUIC path carries (1200 bytes) and sends probe
packets (PING + PADDING, acknowledged like any packet) to find the largest datagram the
path delivers, up to a ceiling (the route's MTU less IP/UDP headers, the peer's
max_udp_payload_size, a configured cap). The first probe is the ceiling itself: on
loopback or a jumbo-frame link it succeeds at once, in one round trip. A probe lost
:data:`MAX_PROBES` times marks its size too large; the search then bisects between the
largest size confirmed and the smallest refused, down to :data:`SEARCH_RESOLUTION`
bytes. Probe losses are not congestion signals (the caller keeps them out of the
congestion controller). After :data:`RAISE_INTERVAL` seconds a finished search may start
again from the confirmed size (the path may have changed).

All times are seconds on the caller's clock; sizes are UDP payload bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_SIZE = 1200
"""Every QUIC path carries this (RFC 9000, 14)."""
MAX_PROBES = 3
"""Losses of one size before it is taken as too large (RFC 8899 MAX_PROBES)."""
SEARCH_RESOLUTION = 32
"""The search stops when the confirmed and refused sizes are this close."""
RAISE_INTERVAL = 600.0
"""Seconds before a finished search probes upwards again (RFC 8899 PMTU_RAISE_TIMER)."""


@dataclass
class PmtuSearch:
    """The state of one connection's search. ``ceiling``: the largest size worth trying."""

    ceiling: int
    confirmed: int = BASE_SIZE
    """Largest size acknowledged so far: what the connection may send."""
    refused: int | None = None
    """Smallest size lost :data:`MAX_PROBES` times in a row (None: none yet)."""
    candidate: int | None = None
    """The size being tried (probed again after a loss, until MAX_PROBES)."""
    in_flight: bool = False
    """True while a probe of ``candidate`` awaits its fate."""
    losses: int = 0
    """Consecutive losses of ``candidate``."""
    done_at: float | None = None
    """When the search finished (None while searching)."""
    probes_sent: int = 0

    def __post_init__(self) -> None:
        self.ceiling = max(BASE_SIZE, self.ceiling)

    @property
    def searching(self) -> bool:
        """True while probes remain to be sent."""
        return self.done_at is None

    def _upper(self) -> int:
        return self.refused - 1 if self.refused is not None else self.ceiling

    def next_probe(self, now: float) -> int | None:
        """The size to probe now, or None (a probe is in flight, or the search is over)."""
        if self.in_flight:
            return None
        if self.done_at is not None:
            if now - self.done_at < RAISE_INTERVAL or self.confirmed >= self.ceiling:
                return None
            self.done_at = None  # the raise timer: look again above what is confirmed
            self.refused = None
        if self.candidate is None:
            upper = self._upper()
            if upper - self.confirmed < SEARCH_RESOLUTION:
                self.done_at = now
                return None
            # First the ceiling itself (right at once on loopback and jumbo links), then
            # halfway between what is confirmed and what is refused.
            self.candidate = upper if self.refused is None else (self.confirmed + upper + 1) // 2
            self.losses = 0
        self.in_flight = True
        self.probes_sent += 1
        return self.candidate

    def on_probe_acknowledged(self, size: int, now: float) -> int:
        """A probe of ``size`` arrived; returns the size the connection may now use."""
        if size == self.candidate:
            self.candidate, self.in_flight = None, False
        self.confirmed = max(self.confirmed, size)
        if self._upper() - self.confirmed < SEARCH_RESOLUTION:
            self.done_at = now
        return self.confirmed

    def on_probe_lost(self, size: int, now: float) -> None:
        """A probe of ``size`` was declared lost."""
        if size != self.candidate:
            return
        self.in_flight = False
        self.losses += 1
        if self.losses >= MAX_PROBES:
            self.refused = size if self.refused is None else min(self.refused, size)
            self.candidate = None
            if self._upper() - self.confirmed < SEARCH_RESOLUTION:
                self.done_at = now
