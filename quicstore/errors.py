"""Typed exceptions of the public API, each carrying the spec's error code.

``except quicstore.NotFound`` reads better than comparing codes; ``exc.code`` still gives the
wire code (spec Section 12) and ``exc.code_name`` its name.
"""

from __future__ import annotations

from .proto.codes import ErrorCode, describe_error_code


class QuicstoreError(Exception):
    """Base of every quicstore failure. ``code`` is a spec error code."""

    code: int = ErrorCode.QS_INTERNAL_ERROR

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message or describe_error_code(self.code))
        self.message = message or describe_error_code(self.code)

    @property
    def code_name(self) -> str:
        """The code's name, e.g. ``QS_NOT_FOUND``."""
        return describe_error_code(self.code)

    def __str__(self) -> str:
        return f"{self.message} ({self.code_name})"


class RequestFailed(QuicstoreError):
    """The gateway refused or failed a request."""


class NotFound(RequestFailed):
    code = ErrorCode.QS_NOT_FOUND


class PreconditionFailed(RequestFailed):
    code = ErrorCode.QS_PRECONDITION_FAILED


class NotModified(RequestFailed):
    code = ErrorCode.QS_NOT_MODIFIED


class RangeNotSatisfiable(RequestFailed):
    code = ErrorCode.QS_RANGE_NOT_SATISFIABLE


class AuthError(RequestFailed):
    """Missing, malformed, expired or insufficient credentials."""

    code = ErrorCode.QS_UNAUTHENTICATED


class Unauthenticated(AuthError):
    code = ErrorCode.QS_UNAUTHENTICATED


class TokenExpired(AuthError):
    code = ErrorCode.QS_TOKEN_EXPIRED


class Forbidden(AuthError):
    code = ErrorCode.QS_FORBIDDEN


class InvalidRequest(RequestFailed):
    """The request itself was wrong (bad key, bad fields, over a limit)."""

    code = ErrorCode.QS_BAD_REQUEST


class IntegrityError(QuicstoreError):
    """Bytes did not match their checksums, and fetching them again did not help."""

    code = ErrorCode.QS_INTEGRITY_ERROR


class ObjectChanged(PreconditionFailed):
    """The object was replaced while it was being read in parts; nothing was mixed."""


class ConnectionFailed(QuicstoreError):
    """The gateway could not be reached, or the connection broke and retries ran out."""

    code = ErrorCode.QS_INTERNAL_ERROR


class ProtocolViolation(QuicstoreError):
    """The peer broke the protocol (a bug on one side)."""


_BY_CODE: dict[int, type[RequestFailed]] = {
    ErrorCode.QS_NOT_FOUND: NotFound,
    ErrorCode.QS_PRECONDITION_FAILED: PreconditionFailed,
    ErrorCode.QS_NOT_MODIFIED: NotModified,
    ErrorCode.QS_RANGE_NOT_SATISFIABLE: RangeNotSatisfiable,
    ErrorCode.QS_UNAUTHENTICATED: Unauthenticated,
    ErrorCode.QS_TOKEN_EXPIRED: TokenExpired,
    ErrorCode.QS_FORBIDDEN: Forbidden,
    ErrorCode.QS_BAD_REQUEST: InvalidRequest,
    ErrorCode.QS_INVALID_KEY: InvalidRequest,
    ErrorCode.QS_KEY_TOO_LONG: InvalidRequest,
    ErrorCode.QS_METADATA_TOO_LARGE: InvalidRequest,
    ErrorCode.QS_OBJECT_TOO_LARGE: InvalidRequest,
    ErrorCode.QS_MESSAGE_ERROR: InvalidRequest,
}


def error_for_code(code: int, message: str = "") -> QuicstoreError:
    """The typed exception for a spec error code received from the gateway."""
    if code == ErrorCode.QS_INTEGRITY_ERROR:
        return IntegrityError(message)
    cls = _BY_CODE.get(code, RequestFailed)
    return cls(message, code=code)
