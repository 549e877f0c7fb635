"""Codepoints of the quicstore protocol, version 1 (spec/quicstore.md).

Every number here is also in a table of the spec; ``tools/spec_check.py`` holds the two
(and the test vectors) in agreement.
"""

from __future__ import annotations

from enum import IntEnum

ALPN = "quicstore/1"
"""ALPN token that selects quicstore version 1 (spec Section 2.1)."""

ALPN_H3 = "h3"
"""ALPN token of the HTTP/3 mapping (spec/quicstore-h3.md)."""


class FrameType(IntEnum):
    """Frame types (spec Section 4.2)."""

    DATA = 0x00
    REQUEST = 0x01
    RESPONSE = 0x02
    ERROR = 0x03
    CHECKSUMS = 0x04
    TRAILER = 0x05
    LISTING = 0x06
    SETTINGS = 0x07
    GOAWAY = 0x08


class StreamType(IntEnum):
    """Unidirectional stream types (spec Section 3.2)."""

    CONTROL = 0x00


class SettingId(IntEnum):
    """Setting identifiers (spec Section 5)."""

    MAX_FRAME_SIZE = 0x01
    MAX_KEY_LENGTH = 0x02
    MAX_METADATA_SIZE = 0x03
    MAX_CONCURRENT_REQUESTS = 0x04
    BLOCK_SIZE = 0x05
    MAX_OBJECT_SIZE = 0x06
    MAX_LIST_PAGE = 0x07
    CHUNK_SIZE = 0x08


class ErrorCode(IntEnum):
    """Error codes, block 0x5100-0x51FF (spec Section 12)."""

    QS_NO_ERROR = 0x5100
    QS_PROTOCOL_ERROR = 0x5101
    QS_INTERNAL_ERROR = 0x5102
    QS_FRAME_ERROR = 0x5103
    QS_FRAME_UNEXPECTED = 0x5104
    QS_EXCESSIVE_LOAD = 0x5105
    QS_ID_ERROR = 0x5106
    QS_SETTINGS_ERROR = 0x5107
    QS_MISSING_SETTINGS = 0x5108
    QS_STREAM_CREATION_ERROR = 0x5109
    QS_CLOSED_CRITICAL_STREAM = 0x510A
    QS_REQUEST_INCOMPLETE = 0x510B
    QS_REQUEST_CANCELLED = 0x510C
    QS_REQUEST_REJECTED = 0x510D
    QS_MESSAGE_ERROR = 0x510E
    QS_REQUEST_TIMEOUT = 0x510F
    QS_BAD_REQUEST = 0x5120
    QS_UNAUTHENTICATED = 0x5121
    QS_TOKEN_EXPIRED = 0x5122
    QS_FORBIDDEN = 0x5123
    QS_NOT_FOUND = 0x5124
    QS_PRECONDITION_FAILED = 0x5125
    QS_NOT_MODIFIED = 0x5126
    QS_RANGE_NOT_SATISFIABLE = 0x5127
    QS_INVALID_KEY = 0x5128
    QS_KEY_TOO_LONG = 0x5129
    QS_METADATA_TOO_LARGE = 0x512A
    QS_OBJECT_TOO_LARGE = 0x512B
    QS_INTEGRITY_ERROR = 0x512C
    QS_INSUFFICIENT_STORAGE = 0x512D
    QS_TOO_EARLY = 0x512E
    QS_UNAVAILABLE = 0x512F


ERROR_CODE_BLOCK = range(0x5100, 0x5200)
"""The block of integers reserved for quicstore error codes."""


def is_reserved_codepoint(value: int) -> bool:
    """True for values of the form ``0x1f * N + 0x21`` reserved for greasing (Section 13)."""
    return value >= 0x21 and (value - 0x21) % 0x1F == 0


def grease_value(n: int) -> int:
    """The ``n``-th reserved greasing value (``0x1f * n + 0x21``)."""
    return 0x1F * n + 0x21


def describe_error_code(code: int) -> str:
    """The name of a quicstore error code, or its hex form if it is unknown."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"
