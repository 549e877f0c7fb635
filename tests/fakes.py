"""A recording stand-in for aioquic's QuicConnection, for connection-layer unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sent:
    """One call of send_stream_data."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass
class FakeQuic:
    """Records what the quicstore layer asks QUIC to do; allocates stream IDs like QUIC."""

    is_client: bool
    sent: list[Sent] = field(default_factory=list)
    resets: list[tuple[int, int]] = field(default_factory=list)
    stops: list[tuple[int, int]] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    _next_bidi: int = -1
    _next_uni: int = -1

    def __post_init__(self) -> None:
        self._next_bidi = 0 if self.is_client else 1
        self._next_uni = 2 if self.is_client else 3

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        return self._next_uni if is_unidirectional else self._next_bidi

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if stream_id == self._next_bidi:
            self._next_bidi += 4
        if stream_id == self._next_uni:
            self._next_uni += 4
        self.sent.append(Sent(stream_id, bytes(data), end_stream))

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.resets.append((stream_id, error_code))

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self.stops.append((stream_id, error_code))

    def close(
        self, error_code: int = 0, frame_type: int | None = None, reason_phrase: str = ""
    ) -> None:
        self.closed = (error_code, reason_phrase)

    def stream_bytes(self, stream_id: int) -> tuple[bytes, bool]:
        """All bytes sent on a stream, and whether the FIN was sent."""
        chunks = [s for s in self.sent if s.stream_id == stream_id]
        return b"".join(c.data for c in chunks), any(c.end_stream for c in chunks)

    def take(self) -> list[Sent]:
        """The sends since the last call, coalesced per stream in order."""
        out, self.sent = self.sent, []
        return out
