"""Structured payloads: request and response headers, trailers and listings (spec Section 6).

They are MessagePack maps encoded with msgspec; absent optional fields are not sent, unknown
fields are ignored, nil reads as absent. Decoding validates types (and the sizes of fixed-size
fields); the semantic checks of Section 7 (names, ranges, conditions) live in
:mod:`quicstore.proto.semantics`.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

UInt = Annotated[int, msgspec.Meta(ge=0)]
"""A MessagePack unsigned integer."""
Sha256 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
"""A 32-byte SHA-256 digest."""

OP_GET: Final = "GET"
OP_HEAD: Final = "HEAD"
OP_PUT: Final = "PUT"
OP_DELETE: Final = "DELETE"
OP_LIST: Final = "LIST"
OPERATIONS: Final = frozenset({OP_GET, OP_HEAD, OP_PUT, OP_DELETE, OP_LIST})
"""The operations of spec Section 7."""


class RequestHeader(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The payload of a REQUEST frame (spec Section 6.1). Byte counts in bytes."""

    op: str
    """Operation: GET, HEAD, PUT, DELETE or LIST."""
    bucket: str
    """Bucket name."""
    key: str | None = None
    """Object key; required for all operations but LIST."""
    token: str | None = None
    """Bearer token (spec Section 11)."""
    offset: UInt | None = None
    """GET: first byte of the range."""
    length: UInt | None = None
    """GET: bytes wanted from ``offset``."""
    suffix: UInt | None = None
    """GET: the last ``suffix`` bytes."""
    if_match: str | None = None
    """ETag the current version must have, or ``*``."""
    if_none_match: str | None = None
    """ETag the current version must not have, or ``*``."""
    checksums: bool | None = None
    """HEAD: send CHECKSUMS for every block (absent or nil: false)."""
    content_length: UInt | None = None
    """PUT: exact body size."""
    content_type: str | None = None
    """PUT: media type."""
    meta: dict[str, str] | None = None
    """PUT: user metadata."""
    sha256: Sha256 | None = None
    """PUT: SHA-256 of the body, if known up front."""
    prefix: str | None = None
    """LIST: key prefix."""
    delimiter: str | None = None
    """LIST: roll-up delimiter."""
    continuation: str | None = None
    """LIST: continuation token from the previous page."""
    limit: UInt | None = None
    """LIST: most entries wanted."""


class ResponseHeader(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The payload of a RESPONSE frame (spec Section 6.2)."""

    size: UInt | None = None
    """Size of the whole object, bytes."""
    etag: str | None = None
    """ETag of the version."""
    mtime_ns: UInt | None = None
    """When the version was stored, ns since the Unix epoch."""
    block_size: UInt | None = None
    """Checksum block size of the version, bytes."""
    sha256: Sha256 | None = None
    """SHA-256 of the whole object."""
    content_type: str | None = None
    """Media type, if stored."""
    meta: dict[str, str] | None = None
    """User metadata, if stored."""
    offset: UInt | None = None
    """GET: first byte of the body that follows."""
    length: UInt | None = None
    """GET: number of body bytes that follow."""


class Trailer(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The payload of a TRAILER frame (spec Section 6.3)."""

    sha256: Sha256 | None = None
    """SHA-256 of the whole body just sent."""


class ListEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One object of a LISTING (spec Section 6.4)."""

    key: str
    """Object key."""
    size: UInt
    """Object size, bytes."""
    etag: str
    """ETag of the current version."""
    mtime_ns: UInt
    """When the version was stored, ns since the Unix epoch."""


class Listing(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The payload of a LISTING frame (spec Section 6.4)."""

    entries: list[ListEntry] = msgspec.field(default_factory=list)
    """Objects in ascending key order."""
    prefixes: list[str] = msgspec.field(default_factory=list)
    """Rolled-up prefixes, ascending (with a delimiter)."""
    next: str | None = None
    """Continuation token, if more results follow."""


_ENCODER = msgspec.msgpack.Encoder()


def encode_message(message: msgspec.Struct) -> bytes:
    """Encode a structured payload as a MessagePack map."""
    return _ENCODER.encode(message)


def encode_meta(meta: dict[str, str]) -> bytes:
    """The encoding of a ``meta`` map whose size MAX_METADATA_SIZE limits."""
    return _ENCODER.encode(meta)
