"""Events: past-tense facts the connection layer reports to the application.

Each is frozen and keyword-only; byte counts are in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Buffer
from .messages import Listing, RequestHeader, ResponseHeader, Trailer
from .settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of quicstore events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived(Event):
    """Fired on a server when a REQUEST frame arrives on a new request stream."""

    stream_id: int
    header: RequestHeader


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(Event):
    """Fired on a client when the RESPONSE of a request arrives."""

    stream_id: int
    header: ResponseHeader


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReceived(Event):
    """Fired on a client when a request failed with an ERROR frame."""

    stream_id: int
    code: int
    """Error code (spec Section 12); may be one this implementation does not know."""
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingReceived(Event):
    """Fired on a client when the LISTING answering a LIST arrives."""

    stream_id: int
    listing: Listing


@dataclass(frozen=True, slots=True, kw_only=True)
class ChecksumsReceived(Event):
    """Fired when a CHECKSUMS frame arrives (GET/HEAD response, or a PUT body)."""

    stream_id: int
    first_block: int
    """Index of the block of ``checksums[0]``."""
    checksums: tuple[int, ...]
    """CRC32C per block."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(Event):
    """Fired when object bytes arrive (GET body on a client, PUT body on a server).

    ``data`` is a read-only view into the received bytes; copy it to keep it past the next
    call into the connection only if the caller reuses buffers (this layer does not).
    """

    stream_id: int
    data: Buffer


@dataclass(frozen=True, slots=True, kw_only=True)
class TrailerReceived(Event):
    """Fired on a server when the TRAILER of a PUT arrives."""

    stream_id: int
    trailer: Trailer


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """Fired when the peer's message on a request stream ended with a FIN, complete."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset(Event):
    """Fired when the peer reset its sending side of a request stream (RESET_STREAM)."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSendingReceived(Event):
    """Fired when the peer asked this side to stop sending on a request stream.

    QUIC has already reset this side's sending half with the same code; further sends on the
    stream are dropped.
    """

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAbandoned(Event):
    """Fired when this side abandoned a request stream because the peer broke a rule of
    the message (a malformed header, an early FIN, DATA not matching its length).

    The connection layer has already sent what the spec requires (ERROR, STOP_SENDING,
    RESET_STREAM); the application frees the request's resources.
    """

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsReceived(Event):
    """Fired when the peer's SETTINGS frame arrives."""

    settings: Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class GoawayReceived(Event):
    """Fired on a client when the server starts a graceful shutdown."""

    stream_id: int
    """Requests on streams with this ID or above will not be processed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted(Event):
    """Fired when the QUIC handshake completes."""

    alpn_protocol: str | None
    early_data_accepted: bool
    session_resumed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated(Event):
    """Fired once when the connection ends, closed by either side."""

    code: int
    """quicstore or QUIC error code."""
    reason: str
    by_peer: bool
    """True if the peer closed it (or it timed out), False if this side did."""
