"""What the stores over remote object services (azure.py, s3.py) share: the encoding of the
metadata they keep per version (content type and user meta, checksums inline or in a
trailer), the room that metadata needs, the upload body buffered and verified as it arrives,
and the conditional publish or delete re-checked after a writer slipped in between.

Each service names its metadata differently (``qs_meta`` on Azure, ``qs-meta`` on S3) and
allows a different amount of it: the names and the limit are the caller's.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.frames import Buffer
from ..proto.integrity import pack_checksums
from ..proto.semantics import etag_from_sha256
from .base import Condition, ObjectInfo, VerifyingDigester

T = TypeVar("T")

COMMIT_ATTEMPTS = 16
"""Times a commit or delete re-checks its condition after another writer slipped in."""
DIGEST_IN_THREAD = 256 * 1024
"""Bytes of one write above which hashing moves off the event loop."""


# --- what a version's metadata says ---------------------------------------------------------


class ContentMeta(msgspec.Struct, omit_defaults=True):
    """Fields of ObjectInfo that are not plain ASCII: kept msgpacked, in base64, in one
    metadata value."""

    content_type: str | None = None
    meta: dict[str, str] = {}


_CONTENT_META_ENCODER = msgspec.msgpack.Encoder()
_CONTENT_META_DECODER = msgspec.msgpack.Decoder(ContentMeta)


def encode_content_meta(content_type: str | None, meta: dict[str, str]) -> str | None:
    """The metadata value keeping ``content_type`` and ``meta`` (base64 of msgpack), or None
    when there is neither (no value is stored then)."""
    if content_type is None and not meta:
        return None
    fields = ContentMeta(content_type=content_type, meta=dict(meta))
    return base64.b64encode(_CONTENT_META_ENCODER.encode(fields)).decode("ascii")


def decode_content_meta(encoded: str | None) -> ContentMeta:
    """What :func:`encode_content_meta` kept (None: nothing was). Raises ValueError
    (binascii.Error, msgspec.DecodeError) if the value is broken."""
    if encoded is None:
        return ContentMeta()
    return _CONTENT_META_DECODER.decode(base64.b64decode(encoded, validate=True))


def metadata_size(metadata: dict[str, str]) -> int:
    """Bytes of the names and values of ``metadata`` (UTF-8), as services count them."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def place_checksums(metadata: dict[str, str], name: str, packed: bytes, limit: int) -> bytes:
    """Keep the packed block checksums in ``metadata[name]`` as ``inline:<base64>`` if the
    metadata then still fits ``limit`` bytes; else mark them ``trailer`` there. Returns the
    trailer to store after the object's bytes (b"" when they went inline)."""
    inline = "inline:" + base64.b64encode(packed).decode("ascii")
    if metadata_size(metadata) + len(name) + len(inline) <= limit:
        metadata[name] = inline
        return b""
    metadata[name] = "trailer"
    return packed


def placed_checksums(placement: str, size: int, blocks: int) -> tuple[bytes | None, int]:
    """``(checksums, stored size)`` for a value :func:`place_checksums` wrote: the packed
    checksums when inline (None in a trailer) and the bytes the stored object must have for
    ``size`` bytes of data in ``blocks`` blocks. ValueError (binascii.Error) if the value or
    the number of inline checksums is wrong."""
    if placement == "trailer":
        return None, size + 4 * blocks
    if placement.startswith("inline:"):
        checksums = base64.b64decode(placement[7:], validate=True)
        if len(checksums) != 4 * blocks:
            raise ValueError("checksum count")
        return checksums, size
    raise ValueError("checksum placement")


def check_metadata_room(
    metadata_of: Callable[[ObjectInfo], dict[str, str]],
    checksums_name: str,
    limit: int,
    service: str,
    *,
    bucket: str,
    key: str,
    block_size: int,
    content_type: str | None,
    meta: dict[str, str],
) -> None:
    """QS_METADATA_TOO_LARGE unless ``metadata_of`` an upload with these fields (at the
    largest size and time), with its checksums in a trailer (``checksums_name``), fits the
    ``limit`` bytes ``service`` allows: checked before the upload starts."""
    largest = ObjectInfo(
        bucket=bucket,
        key=key,
        size=1 << 62,
        etag="",
        mtime_ns=1 << 62,
        block_size=block_size,
        sha256=bytes(32),
        content_type=content_type,
        meta=dict(meta),
    )
    if metadata_size(metadata_of(largest)) + len(checksums_name + "trailer") > limit:
        raise RequestError(
            ErrorCode.QS_METADATA_TOO_LARGE,
            f"content type and meta take more than {service}'s metadata limit "
            f"({limit} bytes once encoded)",
        )


# --- conditional writes -------------------------------------------------------------------


class LostRace(Exception):
    """Another writer changed the object between the check of the condition and the
    conditional request that relied on it: check again."""


async def retry_lost_races(attempt: Callable[[], Awaitable[T]], gave_up: str) -> T:
    """``attempt()`` (which checks the condition, then publishes or deletes conditionally on
    the version checked), again each time it raises :class:`LostRace`, at most
    COMMIT_ATTEMPTS times; then QS_UNAVAILABLE with the message ``gave_up``."""
    for _ in range(COMMIT_ATTEMPTS):
        try:
            return await attempt()
        except LostRace:
            continue
    raise RequestError(ErrorCode.QS_UNAVAILABLE, gave_up)


# --- uploads ------------------------------------------------------------------------------


class BufferedUpload(abc.ABC):
    """The part of a remote store's upload that does not depend on the service: the body
    verified as it arrives (hashed off the event loop for large writes), buffered in
    ``_pending`` and handed to :meth:`_send_piece` in pieces of ``piece_size`` bytes, the
    verified version's metadata, and commit and abort, which leave the service's part to
    :meth:`_commit` (publish) and :meth:`_finish` (let go of what was sent)."""

    def __init__(
        self,
        bucket: str,
        key: str,
        block_size: int,
        content_type: str | None,
        meta: dict[str, str],
        piece_size: int,
    ) -> None:
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._meta = meta
        self._digest = VerifyingDigester(block_size)
        self._piece_size = piece_size
        self._pending = bytearray()
        self._size = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def _digest_all(self, chunks: Sequence[Buffer]) -> None:
        for chunk in chunks:
            self._digest.update(chunk)

    async def write(self, chunks: Sequence[Buffer]) -> None:
        """Append ``chunks``; each full piece is sent as it fills (QS_INTEGRITY_ERROR if a
        block fails the client's checksum)."""
        if self._finished:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "upload already finished")
        total = sum(len(c) for c in chunks)
        if total >= DIGEST_IN_THREAD:
            await asyncio.to_thread(self._digest_all, chunks)
        else:
            self._digest_all(chunks)
        for chunk in chunks:
            self._pending += chunk
        self._size += total
        piece_size = self._piece_size
        while len(self._pending) >= piece_size:
            data = bytes(self._pending[:piece_size])
            del self._pending[:piece_size]
            await self._send_piece(data)

    @abc.abstractmethod
    async def _send_piece(self, data: bytes) -> None:
        """Send the next piece of the body to the service (not visible before the commit)."""

    async def commit(
        self, *, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        """Verify the body, then publish it atomically if ``condition`` accepts the current
        version (:meth:`_commit`); the upload is finished either way (:meth:`_finish`)."""
        if self._finished:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "upload already finished")
        self._finished = True
        try:
            return await self._commit(sha256, content_length, condition)
        finally:
            self._pending = bytearray()
            await self._finish()

    async def abort(self) -> None:
        """Discard the upload: nothing is published, and what was sent is let go of
        (:meth:`_finish`). Idempotent."""
        self._finished = True
        self._pending = bytearray()
        await self._finish()

    @abc.abstractmethod
    async def _commit(
        self, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        """Verify and publish (see :meth:`commit`)."""

    @abc.abstractmethod
    async def _finish(self) -> None:
        """Let go of what the upload still holds at the service once :meth:`commit` is
        done (published or failed) or the upload is aborted."""

    async def expect_checksums(self, first_block: int, checksums: Sequence[int]) -> None:
        """Record the client's block checksums (verified as the body arrives)."""
        self._digest.expect(first_block, checksums)

    def _verified_version(
        self, sha256: bytes | None, content_length: int | None
    ) -> tuple[bytes, ObjectInfo]:
        """``(packed block checksums, metadata)`` of the version to publish, once the body
        matched the client's claims (QS_INTEGRITY_ERROR if not)."""
        checksums, digest, _ = self._digest.finish(sha256=sha256, content_length=content_length)
        info = ObjectInfo(
            bucket=self._bucket,
            key=self._key,
            size=self._size,
            etag=etag_from_sha256(digest),
            mtime_ns=time.time_ns(),
            block_size=self._digest.digester.block_size,
            sha256=digest,
            content_type=self._content_type,
            meta=dict(self._meta),
        )
        return pack_checksums(checksums), info
