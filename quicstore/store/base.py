"""The Store interface: versioned objects by (bucket, key), knowing nothing of streams or frames.

A store keeps, for every object version: its bytes, size, ETag, modification time, the
CRC32C of each block and the SHA-256 of the whole (spec Section 8). Readers pin one version:
bytes read through an :class:`ObjectReader` all come from the version it opened, even if the
key is replaced meanwhile. Writers are invisible until :meth:`ObjectWriter.commit` succeeds,
which verifies what the client claimed and publishes the version atomically.

Failures are :class:`~quicstore.proto.errors.RequestError` with the spec's code
(QS_NOT_FOUND, QS_PRECONDITION_FAILED, QS_INTEGRITY_ERROR, QS_INSUFFICIENT_STORAGE,
QS_BAD_REQUEST for a bad continuation token, QS_INTERNAL_ERROR for I/O failures).
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import msgspec

from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.frames import Buffer
from ..proto.integrity import BodyDigester, IntegrityError
from ..proto.semantics import etag_from_sha256

Condition = Callable[[str | None], None]
"""Called with the current version's ETag (None if there is none) at the moment of commit
or delete; raises RequestError to refuse."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one object version."""

    bucket: str
    key: str
    size: int
    """Bytes."""
    etag: str
    mtime_ns: int
    """When the version was stored, ns since the Unix epoch."""
    block_size: int
    """Checksum block size, bytes."""
    sha256: bytes
    """SHA-256 of the whole object."""
    content_type: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing."""

    entries: list[ObjectInfo]
    prefixes: list[str]
    next: str | None
    """Continuation token for the next page, if any."""


class ObjectReader(Protocol):
    """An open object version."""

    info: ObjectInfo

    async def read_into(self, offset: int, buffer: memoryview) -> int:
        """Read up to ``len(buffer)`` bytes at ``offset`` into ``buffer``; return the count."""
        ...

    async def read_checksums(self, first_block: int, count: int) -> bytes:
        """Packed big-endian CRC32C of ``count`` blocks from ``first_block``."""
        ...

    async def close(self) -> None:
        """Release the version."""
        ...


class ObjectWriter(Protocol):
    """An upload in progress: invisible until committed."""

    async def write(self, chunks: Sequence[Buffer]) -> None:
        """Append ``chunks`` to the body, in order."""
        ...

    async def expect_checksums(self, first_block: int, checksums: Sequence[int]) -> None:
        """Checksums the client claims for blocks from ``first_block`` (verified as written)."""
        ...

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def commit(
        self, *, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        """Verify the body against the client's claims, then publish it atomically if
        ``condition`` accepts the current version. Nothing is visible if this raises."""
        ...

    async def abort(self) -> None:
        """Discard the upload. Idempotent."""
        ...


class Store(Protocol):
    """A collection of buckets of versioned objects."""

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The current version's metadata (QS_NOT_FOUND if none)."""
        ...

    async def open(self, bucket: str, key: str) -> ObjectReader:
        """Open the current version for reading (QS_NOT_FOUND if none)."""
        ...

    async def create(
        self,
        bucket: str,
        key: str,
        *,
        block_size: int,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> ObjectWriter:
        """Start an upload of a new version."""
        ...

    async def delete(self, bucket: str, key: str, condition: Condition) -> ObjectInfo:
        """Remove the current version if ``condition`` accepts it; return what was removed."""
        ...

    async def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        continuation: str | None = None,
        limit: int = 1000,
    ) -> ListPage:
        """Keys starting with ``prefix`` in byte order, after ``continuation``."""
        ...

    async def close(self) -> None:
        """Release the store's resources."""
        ...


# --- helpers shared by the backends -------------------------------------------------------


def successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix`` (UTF-8 byte
    order equals code point order); "" for an empty prefix (no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return ""


TokenT = TypeVar("TokenT", bound=msgspec.Struct)


def encode_token(position: msgspec.Struct) -> str:
    """An opaque continuation token carrying ``position``: its msgpack in unpadded URL-safe
    base64 (each store has its own struct of what a position is)."""
    raw = msgspec.msgpack.encode(position)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, position_type: type[TokenT]) -> TokenT:
    """The ``position_type`` a token made by :func:`encode_token` carries; QS_BAD_REQUEST if
    it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return msgspec.msgpack.decode(raw, type=position_type)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise RequestError(ErrorCode.QS_BAD_REQUEST, "malformed continuation token") from None


class _Continuation(msgspec.Struct, array_like=True):
    start: str
    """List keys greater than or equal to this."""


def encode_continuation(start: str) -> str:
    """An opaque continuation token meaning "keys from ``start`` on"."""
    return encode_token(_Continuation(start))


def decode_continuation(token: str) -> str:
    """The position a token names; QS_BAD_REQUEST if it is not one of ours."""
    return decode_token(token, _Continuation).start


def deletable(condition: Condition, current: ObjectInfo | None) -> ObjectInfo:
    """The version a delete removes: ``current`` (None: there is none) once ``condition``
    accepts its ETag; QS_NOT_FOUND if there is no version (after the condition, which may
    refuse first)."""
    condition(current.etag if current is not None else None)
    if current is None:
        raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
    return current


def roll_up(key: str, prefix: str, delimiter: str | None) -> str | None:
    """The rolled-up prefix of ``key`` under ``delimiter``, or None if it is not rolled up."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def after_key(key: str) -> str:
    """The smallest valid key greater than ``key`` (keys never contain NUL)."""
    return key + "\x00"


def page_from_sorted_keys(
    keys: Sequence[str],
    info_of: Callable[[str], ObjectInfo],
    *,
    prefix: str,
    delimiter: str | None,
    continuation: str | None,
    limit: int,
) -> ListPage:
    """A LIST page (spec Section 7.6) over ``keys`` sorted in byte order."""
    start = decode_continuation(continuation) if continuation is not None else prefix
    start = max(start, prefix)
    bound = successor(prefix) or None
    index = bisect.bisect_left(keys, start)
    entries: list[ObjectInfo] = []
    prefixes: list[str] = []
    while index < len(keys) and len(entries) + len(prefixes) < limit:
        key = keys[index]
        if bound is not None and key >= bound:
            break
        rolled = roll_up(key, prefix, delimiter)
        if rolled is not None:
            prefixes.append(rolled)
            start = successor(rolled)
            index = bisect.bisect_left(keys, start)
            continue
        entries.append(info_of(key))
        start = after_key(key)
        index += 1
    more = index < len(keys) and (bound is None or keys[index] < bound)
    return ListPage(
        entries=entries, prefixes=prefixes, next=encode_continuation(start) if more else None
    )


class VerifyingDigester:
    """A BodyDigester plus the end-of-upload checks of spec Section 7.4 step 3."""

    def __init__(self, block_size: int) -> None:
        self.digester = BodyDigester(block_size)

    def update(self, data: Buffer) -> None:
        """Add body bytes (QS_INTEGRITY_ERROR on a failed client block checksum)."""
        try:
            self.digester.update(data)
        except IntegrityError as exc:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, exc.reason) from None

    def expect(self, first_block: int, checksums: Sequence[int]) -> None:
        """Record client block checksums (QS_INTEGRITY_ERROR if one already mismatches)."""
        try:
            self.digester.expect(first_block, checksums)
        except IntegrityError as exc:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, exc.reason) from None

    def finish(
        self, *, sha256: bytes | None, content_length: int | None
    ) -> tuple[list[int], bytes, str]:
        """``(block checksums, sha256, etag)`` after checking the client's claims."""
        try:
            checksums, digest = self.digester.finish()
        except IntegrityError as exc:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, exc.reason) from None
        if content_length is not None and content_length != self.digester.size:
            raise RequestError(
                ErrorCode.QS_INTEGRITY_ERROR,
                f"body of {self.digester.size} bytes, content_length {content_length}",
            )
        if sha256 is not None and sha256 != digest:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, "body SHA-256 does not match")
        return checksums, digest, etag_from_sha256(digest)
