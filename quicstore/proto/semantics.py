"""Request semantics of spec Section 7 as pure functions: names, fields, ranges, conditions.

The gateway (any front end: native or HTTP/3) calls these before touching its store; each
raises :class:`~quicstore.proto.errors.RequestError` with the spec's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .codes import ErrorCode
from .errors import RequestError
from .messages import (
    OP_DELETE,
    OP_GET,
    OP_HEAD,
    OP_LIST,
    OP_PUT,
    OPERATIONS,
    RequestHeader,
    encode_meta,
)
from .settings import Settings

MAX_TOKEN_LENGTH = 4096
"""Longest bearer token accepted, bytes (spec Section 11)."""
MAX_SEGMENT_LENGTH = 255
"""Longest key segment between slashes, bytes (spec Section 7.1; the usual NAME_MAX)."""

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_ETAG_RE = re.compile(r"[\x21\x23-\x7e]{1,128}")
_FORBIDDEN_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_bucket(bucket: str) -> None:
    """Spec Section 7.1 bucket names; QS_INVALID_KEY otherwise."""
    if not _BUCKET_RE.fullmatch(bucket):
        raise RequestError(ErrorCode.QS_INVALID_KEY, "invalid bucket name")


def validate_key(key: str, max_key_length: int) -> None:
    """Spec Section 7.1 keys: QS_KEY_TOO_LONG or QS_INVALID_KEY on a bad one."""
    encoded_length = len(key.encode("utf-8", "surrogatepass"))
    if encoded_length > max_key_length:
        raise RequestError(
            ErrorCode.QS_KEY_TOO_LONG, f"key of {encoded_length} bytes exceeds {max_key_length}"
        )
    if not key:
        raise RequestError(ErrorCode.QS_INVALID_KEY, "empty key")
    if _FORBIDDEN_KEY_CHARS.search(key):
        raise RequestError(ErrorCode.QS_INVALID_KEY, "key has a control character or backslash")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(ErrorCode.QS_INVALID_KEY, "key is not valid UTF-8") from None
    if key.startswith("/"):
        raise RequestError(ErrorCode.QS_INVALID_KEY, "key starts with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise RequestError(ErrorCode.QS_INVALID_KEY, "key has an empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_LENGTH:
            raise RequestError(
                ErrorCode.QS_INVALID_KEY, f"key segment longer than {MAX_SEGMENT_LENGTH} bytes"
            )


def validate_etag_condition(value: str) -> None:
    """An if_match / if_none_match value: ``*`` or an ETag (Section 7.7)."""
    if value != "*" and not _ETAG_RE.fullmatch(value):
        raise RequestError(ErrorCode.QS_BAD_REQUEST, "malformed ETag in a condition")


def validate_request(header: RequestHeader, settings: Settings) -> None:
    """Check a request's fields against Sections 6.1 and 7 and the server's ``settings``.

    Checks names, field combinations and announced limits; it does not look at tokens or
    the store. Raises RequestError with the spec's code.
    """
    if header.op not in OPERATIONS:
        raise RequestError(ErrorCode.QS_BAD_REQUEST, f"unknown op {header.op[:16]!r}")
    if header.token is not None and len(header.token) > MAX_TOKEN_LENGTH:
        raise RequestError(ErrorCode.QS_UNAUTHENTICATED, "token too long")
    validate_bucket(header.bucket)
    if header.op == OP_LIST:
        if header.limit is not None and header.limit < 1:
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "limit must be at least 1")
        if header.prefix and len(header.prefix.encode("utf-8", "surrogatepass")) > (
            settings.max_key_length
        ):
            raise RequestError(ErrorCode.QS_KEY_TOO_LONG, "prefix longer than MAX_KEY_LENGTH")
        if header.delimiter == "":
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "empty delimiter")
        return
    if header.key is None:
        raise RequestError(ErrorCode.QS_BAD_REQUEST, f"{header.op} needs a key")
    validate_key(header.key, settings.max_key_length)
    if header.if_match is not None:
        validate_etag_condition(header.if_match)
    if header.if_none_match is not None:
        validate_etag_condition(header.if_none_match)
    if header.op == OP_GET:
        _validate_range_fields(header)
    elif header.op == OP_PUT:
        if header.meta:
            meta_size = len(encode_meta(header.meta))
            if meta_size > settings.max_metadata_size:
                raise RequestError(
                    ErrorCode.QS_METADATA_TOO_LARGE,
                    f"meta of {meta_size} bytes exceeds {settings.max_metadata_size}",
                )
        if (
            settings.max_object_size
            and header.content_length is not None
            and header.content_length > settings.max_object_size
        ):
            raise RequestError(
                ErrorCode.QS_OBJECT_TOO_LARGE,
                f"content_length {header.content_length} exceeds {settings.max_object_size}",
            )
    elif header.op == OP_DELETE and header.if_none_match is not None:
        raise RequestError(ErrorCode.QS_BAD_REQUEST, "DELETE does not take if_none_match")


def _validate_range_fields(header: RequestHeader) -> None:
    if header.suffix is not None:
        if header.offset is not None or header.length is not None:
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "suffix excludes offset and length")
        if header.suffix == 0:
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "suffix must be at least 1")
    if header.length is not None:
        if header.offset is None:
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "length needs offset")
        if header.length == 0:
            raise RequestError(ErrorCode.QS_BAD_REQUEST, "length must be at least 1")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A resolved range of an object: ``length`` bytes from ``offset``."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.offset + self.length


def resolve_range(header: RequestHeader, size: int) -> ByteRange:
    """The bytes a GET serves from an object of ``size`` bytes (spec Section 7.2).

    Raises QS_RANGE_NOT_SATISFIABLE for an offset at or past the end (except offset 0 of
    an empty object). Assumes :func:`validate_request` passed.
    """
    if header.suffix is not None:
        length = min(header.suffix, size)
        return ByteRange(size - length, length)
    if header.offset is None:
        return ByteRange(0, size)
    offset = header.offset
    if offset >= size and not (offset == 0 and size == 0):
        raise RequestError(
            ErrorCode.QS_RANGE_NOT_SATISFIABLE, f"offset {offset} is past the end ({size} bytes)"
        )
    end = size if header.length is None else min(size, offset + header.length)
    return ByteRange(offset, end - offset)


def check_conditions(header: RequestHeader, current_etag: str | None) -> None:
    """Evaluate ``if_match`` / ``if_none_match`` against the current version (Section 7.7).

    ``current_etag`` is None when the object does not exist. Raises
    QS_PRECONDITION_FAILED or QS_NOT_MODIFIED; for GET, HEAD and DELETE of a missing object
    without ``if_match``, raises QS_NOT_FOUND.
    """
    if header.if_match is not None and (
        current_etag is None or (header.if_match != "*" and header.if_match != current_etag)
    ):
        raise RequestError(ErrorCode.QS_PRECONDITION_FAILED, "if_match failed")
    if header.if_none_match is not None and current_etag is not None:
        matches = header.if_none_match == "*" or header.if_none_match == current_etag
        if matches:
            if header.op in (OP_GET, OP_HEAD):
                raise RequestError(ErrorCode.QS_NOT_MODIFIED, "if_none_match matched")
            raise RequestError(ErrorCode.QS_PRECONDITION_FAILED, "if_none_match failed")
    if current_etag is None and header.op in (OP_GET, OP_HEAD, OP_DELETE):
        raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")


def list_page_limit(header: RequestHeader, settings: Settings) -> int:
    """Entries a LIST page may hold: ``min(limit, MAX_LIST_PAGE)`` (Section 7.6)."""
    if header.limit is None:
        return settings.max_list_page
    return min(header.limit, settings.max_list_page)


def etag_from_sha256(digest: bytes) -> str:
    """The reference gateway's ETag: hex of the first 16 bytes of the SHA-256 (Section 8)."""
    return digest[:16].hex()
