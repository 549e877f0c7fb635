"""Protocol errors that carry their wire code, their scope and the side that caused them.

Two families, after h11/h2:

- :class:`RemoteProtocolError`: the peer broke the protocol. The connection layer turns it
  into the spec's reaction (CONNECTION_CLOSE, RESET_STREAM/STOP_SENDING, or an ERROR frame).
- :class:`LocalProtocolError`: the caller of this library asked for something the protocol
  forbids (a frame in the wrong state, a frame over the peer's limit). It is a bug in the
  caller and is raised to it; nothing is sent.
"""

from __future__ import annotations

from enum import Enum

from .codes import ErrorCode, describe_error_code


class ErrorScope(Enum):
    """Where an error code applies (spec Section 12)."""

    CONNECTION = "connection"
    """Closes the whole connection (CONNECTION_CLOSE type 0x1d)."""
    STREAM = "stream"
    """Abandons one request stream (RESET_STREAM / STOP_SENDING)."""
    REQUEST = "request"
    """Fails one request with an ERROR frame; the stream ends normally."""


class ProtocolError(Exception):
    """Base class: an error with a quicstore wire code and a scope."""

    def __init__(self, code: int, reason: str = "", *, scope: ErrorScope) -> None:
        super().__init__(code, reason, scope)
        self.code = int(code)
        self.reason = reason
        self.scope = scope

    def __str__(self) -> str:
        text = describe_error_code(self.code)
        return f"{text}: {self.reason}" if self.reason else text


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol; ``code`` is what the spec says to answer with."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids (a programming error)."""

    def __init__(self, reason: str, code: int = ErrorCode.QS_INTERNAL_ERROR) -> None:
        super().__init__(code, reason, scope=ErrorScope.CONNECTION)


class RequestError(ProtocolError):
    """A request failed with a request-scope code (sent to the client in an ERROR frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason, scope=ErrorScope.REQUEST)


def connection_error(code: ErrorCode, reason: str) -> RemoteProtocolError:
    """A remote violation that closes the connection."""
    return RemoteProtocolError(code, reason, scope=ErrorScope.CONNECTION)


def stream_error(code: ErrorCode, reason: str) -> RemoteProtocolError:
    """A remote violation that abandons one stream."""
    return RemoteProtocolError(code, reason, scope=ErrorScope.STREAM)
