"""A store over Amazon S3 or any S3-compatible service (``aiobotocore``: botocore's request
models, signing and retries on aiohttp, so the event loop never blocks on the service), so
that any number of stateless gateways can serve one set of S3 buckets.

Naming. Bucket ``b`` is the S3 bucket ``<bucket_prefix>b``; key ``k`` is the S3 object ``k``
in it. S3 bucket names are 3 to 63 characters of lowercase letters, digits, ``.`` and ``-``,
start and end with a letter or digit, have no ``..``, do not look like an IPv4 address and
avoid a few reserved prefixes and suffixes; quicstore bucket names may also hold ``_`` and
be 1 or 2 characters long. A bucket whose S3 name would break S3's rule gets QS_INVALID_KEY
before any request reaches S3. Buckets are created on the first PUT into them (in the
client's region). S3 bucket names are global on AWS: a prefix of your own avoids names
other accounts hold.

Per version, the object's user metadata (``x-amz-meta-*``) keeps what the disk store's index
keeps (ObjectInfo): ``qs-format`` (``1``), ``qs-block-size`` (bytes), ``qs-meta`` (base64 of
msgpack: content type and the user's meta map, only when there is one) and ``qs-checksums``,
which says where the rest is:

- ``inline:<base64>``: the object holds exactly the quicstore object's bytes; the metadata
  also has ``qs-size`` (bytes), ``qs-sha256`` (hex), ``qs-mtime-ns`` (ns since the Unix
  epoch) and here the packed big-endian CRC32C of every block.
- ``trailer``: as ``inline``, but the checksums did not fit S3's 2 KiB of user metadata
  (objects above about 20 MiB at 64 KiB blocks), so they follow the object's bytes in the
  same S3 object.
- ``footer``: a multipart upload. S3 takes an object's metadata when the upload starts, long
  before its size, SHA-256 and checksums are known, and cannot change it at completion; so
  the object is the bytes, then the packed checksums, then a 52-byte footer: ``QSF1``, size
  and mtime (big-endian u64 each) and the SHA-256.

Trailer and footer are published by the same atomic PUT or completion as the data and pinned
by the same ETag; a reader of the S3 object's first ``qs-size`` bytes (``qs-size`` is in the
footer for multipart objects) still gets exactly the object. Objects without ``qs-format``
were not written through quicstore: they have no checksums, are not listed and read as
absent. Metadata key names use ``-``, not ``_``: some proxies drop headers with ``_``.

Reading. :meth:`S3Store.open` reads the object's metadata (HEAD, plus one ranged GET of the
footer for multipart objects); every later ranged GET (:meth:`ObjectReader.read_into`,
trailer checksums) carries ``If-Match`` with the S3 ETag seen at open and goes into the
caller's buffer. If the object is replaced or deleted meanwhile the read fails with
QS_PRECONDITION_FAILED (the client reports ObjectChanged), never with bytes of two versions.
Unlike the disk store, a replaced version stops being readable (S3 versioning is not used).
Contiguous reads are served from growing read-ahead windows, as in the Azure store: each S3
request costs far more than its bytes.

Writing. A body below ``part_size`` is sent with one PutObject at commit. A larger one becomes
a multipart upload, started when the first part fills; each part (``part_size`` bytes, at
least S3's 5 MiB; the last one smaller) is uploaded as it fills, ``parts_in_flight`` at once.
Nothing is visible before the commit: parts of an incomplete upload belong to no object. The
commit reads the current version, asks the caller's condition about its quicstore ETag, then
publishes (PutObject or CompleteMultipartUpload) with ``If-Match`` on that version's S3 ETag,
or ``If-None-Match: *`` when there is none, so no other commit can slip in between the check
and the publish; if one did (HTTP 412 or 409), the check is repeated. A failed or aborted
upload is aborted in S3 too (AbortMultipartUpload): no object, no pending upload. An upload
left behind by a gateway that died mid-PUT stays pending in S3: give the buckets a lifecycle
rule (AbortIncompleteMultipartUpload) to reclaim them. At most 10,000 parts: 78 GiB at the
default 8 MiB ``part_size``.

Conditional requests. AWS S3 documents ``If-None-Match: *`` and ``If-Match`` on PutObject and
CompleteMultipartUpload, and ``If-Match`` on DeleteObject, and refuses with 412 (or 409
for a concurrent conditional write) what does not match. moto 5.2 (the test server) honours
them all except ``If-Match`` on CompleteMultipartUpload, which it ignores: there the commit's
check of the condition just before completing is a best effort (a writer landing in the few
milliseconds between the check and the completion of a multipart upload can be replaced
without the condition seeing it). Services that ignore more of these headers get the same
best effort for those requests.

LIST pages are ListObjectsV2's (``MaxKeys`` counts keys and rolled-up prefixes, as in the
spec), with S3's continuation token wrapped in quicstore's opaque token, so any gateway
continues any other's listing. S3 listings carry no user metadata, so every listed object
costs one HEAD (``heads_in_flight`` at once; two requests for multipart objects). Objects
with broken quicstore metadata are left out of listings (and logged).

Credentials come from botocore's standard chain (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, the shared config and credentials files,
container and instance roles) unless the configuration names keys.

Errors: QS_NOT_FOUND, QS_PRECONDITION_FAILED as the spec says; QS_UNAVAILABLE when S3 is
unreachable, throttles (503 SlowDown) or a concurrent writer kept winning; QS_INTERNAL_ERROR
for other failures of the service (logged with S3's error code, never with credentials).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import inspect
import logging
import re
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.semantics import etag_from_sha256
from .base import Condition, ListPage, ObjectInfo, decode_token, deletable, encode_token
from .remote import (
    COMMIT_ATTEMPTS,
    BufferedUpload,
    ContentMeta,
    LostRace,
    check_metadata_room,
    decode_content_meta,
    encode_content_meta,
    place_checksums,
    placed_checksums,
    retry_lost_races,
)

log = logging.getLogger("quicstore.store.s3")
MIB = 1024 * 1024

MIN_PART_SIZE = 5 * MIB
"""S3's smallest part of a multipart upload (all but the last)."""
MAX_PART_SIZE = 5 * 1024 * MIB
"""S3's largest part."""
MAX_PARTS = 10_000
"""Parts one multipart upload may have."""
METADATA_LIMIT = 2000
"""Bytes of user metadata names and values (UTF-8) an object may carry (S3 allows 2 KiB;
some slack)."""
LIST_MAX = 1000
"""Largest page ListObjectsV2 returns."""
FOOTER = struct.Struct(">4sQQ32s")
"""A multipart object's footer: magic, size, mtime_ns, SHA-256."""
FOOTER_MAGIC = b"QSF1"
_READ_PIECE = 1 * MIB
"""Bytes taken from a response body at a time."""

_PREFIX_RE = re.compile(r"(?:[a-z0-9][a-z0-9.-]*)?")
_BUCKET_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_IPV4_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_REGION_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


@dataclass(frozen=True)
class S3StoreConfig:
    """How to reach the S3 service and how to write to it."""

    endpoint_url: str | None = None
    """The service's URL (``http://127.0.0.1:9000``, an S3-compatible service); None: AWS's
    own endpoint for ``region``."""
    bucket_prefix: str = ""
    """Prepended to every bucket name to make its S3 bucket name (lowercase letters,
    digits, ``.`` and ``-``); lets several deployments share one account."""
    region: str | None = None
    """AWS region; None: botocore's (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the config
    file), else ``us-east-1``."""
    access_key_id: str | None = field(default=None, repr=False)
    """Explicit credentials (with ``secret_access_key``); None: botocore's standard chain."""
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    addressing_style: str | None = None
    """``path`` or ``virtual``; None: ``path`` with an ``endpoint_url`` (what S3-compatible
    services expect), botocore's choice for AWS."""
    part_size: int = 8 * MIB
    """Bytes per part of a multipart upload, and the largest body sent as one PutObject:
    what an upload holds in memory per part in flight (5 MiB to 5 GiB)."""
    parts_in_flight: int = 2
    """Parts one upload sends at once (memory: this times ``part_size``)."""
    retries: int | None = None
    """Retries of a failed request by botocore (its "standard" mode: exponential back-off
    with jitter, about 1 s then 2 s); None: ``AWS_MAX_ATTEMPTS`` or the config file's
    ``max_attempts`` (attempts, not retries) if set, else 2, so that a request gives up after
    a few seconds rather than minutes."""
    connect_timeout: float = 5.0
    """Seconds to open a connection to the service."""
    read_timeout: float = 30.0
    """Seconds to wait for the service's response bytes."""
    read_ahead: int = 8 * MIB
    """Largest read-ahead window of a reader, bytes (see ``_Reader``); 0: every read is one
    request of exactly its size."""
    heads_in_flight: int = 16
    """HEAD requests one LIST page sends at once (S3 listings carry no metadata)."""


def s3_bucket_name(prefix: str, bucket: str) -> str:
    """The S3 bucket of ``bucket``: ``prefix + bucket``, or QS_INVALID_KEY if S3 would reject
    that name."""
    name = prefix + bucket
    if (
        not 3 <= len(name) <= 63
        or not _BUCKET_RE.fullmatch(name)
        or ".." in name
        or _IPV4_RE.fullmatch(name)
        or name.startswith(_RESERVED_PREFIXES)
        or name.endswith(_RESERVED_SUFFIXES)
    ):
        raise RequestError(
            ErrorCode.QS_INVALID_KEY,
            f"bucket {bucket!r} cannot be stored in S3: bucket name {name!r} must be 3 to 63 "
            "lowercase letters, digits, '.' and '-', starting and ending with a letter or "
            "digit, with no '..' and not like an IP address",
        )
    return name


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


_UNREACHABLE = (BotoConnectionError, HTTPClientError, ReadTimeoutError)
_BUSY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "RequestTimeout", "Throttling"})


def _service_error(exc: Exception, what: str) -> RequestError:
    """The spec's error for a failure of the service while trying to ``what``."""
    if isinstance(exc, ClientError):
        status, code = _status(exc), _code(exc)
        log.warning("S3 failed to %s: HTTP %s %s", what, status, code)
        if status == 503 or code in _BUSY_CODES:
            return RequestError(ErrorCode.QS_UNAVAILABLE, f"S3 busy ({what})")
        if code == "KeyTooLongError":  # S3 keys are at most 1024 bytes
            return RequestError(ErrorCode.QS_KEY_TOO_LONG, "key too long for S3 (1024 bytes)")
        return RequestError(
            ErrorCode.QS_INTERNAL_ERROR, f"S3 failed to {what}: HTTP {status} {code}".strip()
        )
    log.warning("S3 failed to %s: %s", what, type(exc).__name__)
    if isinstance(exc, _UNREACHABLE):
        return RequestError(ErrorCode.QS_UNAVAILABLE, f"S3 unreachable ({what})")
    if isinstance(exc, NoCredentialsError):
        return RequestError(ErrorCode.QS_INTERNAL_ERROR, f"S3: no credentials ({what})")
    return RequestError(ErrorCode.QS_INTERNAL_ERROR, f"S3 failed to {what}: {type(exc).__name__}")


def _is_missing(exc: ClientError) -> bool:
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "NoSuchBucket", "NotFound")


def _lost_race(exc: ClientError) -> bool:
    """A conditional write or delete refused because the object changed since the check."""
    return _status(exc) in (409, 412) or _code(exc) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "NoSuchKey",
    )


_SESSION: Any = None


def _session() -> Any:
    """The process's botocore session, shared by its stores: a session loads and caches
    S3's service model and endpoint rules (about 0.3 s of CPU per client otherwise)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = get_session()
    return _SESSION


async def _close_body(body: Any) -> None:
    closed = body.close()
    if inspect.isawaitable(closed):
        await closed


# --- what an object's metadata says -------------------------------------------------------


def _upload_metadata(
    block_size: int, content_type: str | None, meta: dict[str, str]
) -> dict[str, str]:
    """What is known when an upload starts (all a multipart object's metadata)."""
    metadata = {"qs-format": "1", "qs-block-size": str(block_size)}
    content_meta = encode_content_meta(content_type, meta)
    if content_meta is not None:
        metadata["qs-meta"] = content_meta
    return metadata


def _full_metadata(info: ObjectInfo) -> dict[str, str]:
    """A single-request object's metadata, all but the checksums."""
    metadata = _upload_metadata(info.block_size, info.content_type, info.meta)
    metadata["qs-size"] = str(info.size)
    metadata["qs-sha256"] = info.sha256.hex()
    metadata["qs-mtime-ns"] = str(info.mtime_ns)
    return metadata


@dataclass(frozen=True, slots=True)
class _Version:
    """What one S3 object's metadata (and footer) say."""

    s3_etag: str
    stored: int
    """Bytes of the S3 object (data, trailer and footer)."""
    info: ObjectInfo | None
    """None for an object not written through quicstore."""
    checksums: bytes | None
    """Packed CRC32Cs when kept in the metadata; None when they follow the data."""


def _blocks(size: int, block_size: int) -> int:
    return -(-size // block_size)


class _Broken(ValueError):
    pass


def _parse_head(head: dict[str, Any]) -> tuple[str, int, dict[str, str], ContentMeta | None]:
    """``(etag, stored size, metadata, extra)``; extra None if not a quicstore object."""
    etag = str(head["ETag"])
    stored = int(head["ContentLength"])
    metadata = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
    if metadata.get("qs-format") != "1":
        return etag, stored, metadata, None
    try:
        extra = decode_content_meta(metadata.get("qs-meta"))
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise _Broken("qs-meta") from None
    return etag, stored, metadata, extra


def _build_version(
    bucket: str,
    key: str,
    etag: str,
    stored: int,
    metadata: dict[str, str],
    extra: ContentMeta,
    footer: bytes | None,
) -> _Version:
    """The version; ``footer``: a multipart object's last FOOTER.size bytes."""
    try:
        block_size = int(metadata["qs-block-size"])
        if block_size <= 0:
            raise _Broken("block size")
        where = metadata["qs-checksums"]
        checksums: bytes | None = None
        if where == "footer":
            if footer is None or len(footer) != FOOTER.size:
                raise _Broken("footer")
            magic, size, mtime_ns, sha256 = FOOTER.unpack(footer)
            if magic != FOOTER_MAGIC:
                raise _Broken("footer magic")
            expected = size + 4 * _blocks(size, block_size) + FOOTER.size
        else:
            size = int(metadata["qs-size"])
            mtime_ns = int(metadata["qs-mtime-ns"])
            sha256 = bytes.fromhex(metadata["qs-sha256"])
            checksums, expected = placed_checksums(where, size, _blocks(size, block_size))
        if size < 0 or len(sha256) != 32 or stored != expected:
            raise _Broken("sizes")
    except (KeyError, ValueError, binascii.Error):
        raise _Broken("metadata") from None
    info = ObjectInfo(
        bucket=bucket,
        key=key,
        size=size,
        etag=etag_from_sha256(sha256),
        mtime_ns=mtime_ns,
        block_size=block_size,
        sha256=sha256,
        content_type=extra.content_type,
        meta=dict(extra.meta),
    )
    return _Version(etag, stored, info, checksums)


class _Continuation(msgspec.Struct, array_like=True, tag="s3"):
    token: str
    """S3's NextContinuationToken."""


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    """Bytes ``[start, end)`` of the pinned version, downloading or downloaded."""

    start: int
    end: int
    task: asyncio.Task[bytearray]


class _Reader:
    """One version, pinned by its S3 ETag.

    Contiguous reads are served from read-ahead windows: the first read fetches exactly what
    it asks; each read that continues the run opens a window as long as the run so far, up
    to ``read_ahead`` bytes (256 KiB reads of a 4 MiB range: 5 requests, nothing past the
    range's end)."""

    def __init__(self, store: S3Store, s3_bucket: str, key: str, version: _Version) -> None:
        assert version.info is not None
        self.info: ObjectInfo = version.info
        self._store = store
        self._s3_bucket = s3_bucket
        self._key = key
        self._version = version
        self._read_ahead = store.config.read_ahead
        self._windows: list[_Window] = []
        self._ahead = -1
        """End of the furthest window, bytes."""
        self._run = 0
        """Bytes of the current run of contiguous windows."""

    async def _download_into(self, offset: int, buffer: memoryview, what: str) -> int:
        try:
            return await self._store._get_range_into(
                self._s3_bucket, self._key, self._version.s3_etag, offset, buffer, what
            )
        except ClientError as exc:
            if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                raise RequestError(
                    ErrorCode.QS_PRECONDITION_FAILED, "object replaced while being read"
                ) from None
            if _is_missing(exc):
                raise RequestError(
                    ErrorCode.QS_PRECONDITION_FAILED, "object deleted while being read"
                ) from None
            raise _service_error(exc, what) from None
        except BotoCoreError as exc:
            raise _service_error(exc, what) from None

    async def _fetch(self, start: int, end: int) -> bytearray:
        out = bytearray(end - start)
        if await self._download_into(start, memoryview(out), "read an object") != len(out):
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "stored object is short")
        return out

    async def read_into(self, offset: int, buffer: memoryview) -> int:
        """Up to ``len(buffer)`` bytes at ``offset`` (bytes) of the pinned version into
        ``buffer`` (fewer at a window's end: ask again); 0 at or past the end.
        QS_PRECONDITION_FAILED if the object was replaced or deleted since
        :meth:`S3Store.open`."""
        want = min(len(buffer), self.info.size - offset)
        if want <= 0:
            return 0
        if want >= self._read_ahead:
            return await self._download_into(offset, buffer[:want], "read an object")
        # Reads come in increasing order: windows that end at or before this one are done.
        self._windows = [w for w in self._windows if w.end > offset]
        window = next((w for w in self._windows if w.start <= offset), None)
        if window is None:
            if offset == self._ahead:
                length = max(want, min(self._run, self._read_ahead))
            else:
                length, self._run = want, 0
            end = min(self.info.size, offset + length)
            task = asyncio.get_running_loop().create_task(self._fetch(offset, end))
            window = _Window(offset, end, task)
            self._windows.append(window)
            self._ahead = end
            self._run += end - offset
        data = await window.task
        n = min(want, window.end - offset)
        at = offset - window.start
        buffer[:n] = memoryview(data)[at : at + n]
        return n

    async def read_checksums(self, first_block: int, count: int) -> bytes:
        """Packed big-endian CRC32C of ``count`` blocks from ``first_block`` (fewer at the
        end of the object)."""
        blocks = _blocks(self.info.size, self.info.block_size)
        count = max(0, min(count, blocks - first_block))
        if count == 0:
            return b""
        if self._version.checksums is not None:
            return self._version.checksums[first_block * 4 : (first_block + count) * 4]
        out = bytearray(count * 4)
        got = await self._download_into(
            self.info.size + first_block * 4, memoryview(out), "read checksums"
        )
        if got != len(out):
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "stored checksums are short")
        return bytes(out)

    async def close(self) -> None:
        """Drop the read-ahead windows (the version is pinned by its ETag only)."""
        for window in self._windows:
            if not window.task.done():
                window.task.cancel()
            elif not window.task.cancelled():
                window.task.exception()  # retrieved: no "never retrieved" warning
        self._windows = []


# --- writing ------------------------------------------------------------------------------


class _Writer(BufferedUpload):
    """An upload: one PutObject at commit, or a multipart upload whose parts are sent as
    they fill and which is completed (or aborted) at the end."""

    def __init__(
        self,
        store: S3Store,
        bucket: str,
        key: str,
        s3_bucket: str,
        block_size: int,
        content_type: str | None,
        meta: dict[str, str],
    ) -> None:
        super().__init__(bucket, key, block_size, content_type, meta, store.config.part_size)
        self._store = store
        self._s3_bucket = s3_bucket
        self._upload_id: str | None = None
        self._parts: list[str | None] = []
        """S3 ETag of each part, by part number - 1 (None while uploading)."""
        self._sending: deque[asyncio.Task[None]] = deque()
        self._completed = False

    @property
    def upload_id(self) -> str | None:
        """The S3 multipart upload's ID, once one was started."""
        return self._upload_id

    async def _start_upload(self) -> str:
        metadata = _upload_metadata(
            self._digest.digester.block_size, self._content_type, self._meta
        )
        metadata["qs-checksums"] = "footer"
        params: dict[str, Any] = {"Bucket": self._s3_bucket, "Key": self._key, "Metadata": metadata}
        if self._content_type:
            params["ContentType"] = self._content_type
        result = await self._store._in_bucket(
            self._s3_bucket,
            lambda: self._store._request("create_multipart_upload", **params),
            "start an upload",
        )
        return str(result["UploadId"])

    async def _send_piece(self, data: bytes) -> None:
        """Upload ``data`` as the next part (each full ``part_size``, and the rest with the
        checksums and footer at commit), starting the multipart upload with the first."""
        if len(self._parts) >= MAX_PARTS:
            raise RequestError(
                ErrorCode.QS_OBJECT_TOO_LARGE, f"object needs more than {MAX_PARTS} S3 parts"
            )
        if self._upload_id is None:
            self._upload_id = await self._start_upload()
        while len(self._sending) >= self._store.config.parts_in_flight:
            await self._sending.popleft()
        index = len(self._parts)
        self._parts.append(None)
        upload_id = self._upload_id

        async def send() -> None:
            try:
                result = await self._store._request(
                    "upload_part",
                    Bucket=self._s3_bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    PartNumber=index + 1,
                    Body=data,
                )
            except (ClientError, BotoCoreError) as exc:
                raise _service_error(exc, "upload a part") from None
            self._parts[index] = str(result["ETag"])

        self._sending.append(asyncio.get_running_loop().create_task(send()))

    async def _drain(self) -> None:
        while self._sending:
            await self._sending.popleft()

    async def _stop_sending(self) -> None:
        tasks = list(self._sending)
        self._sending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            await self._store._request(
                "abort_multipart_upload", Bucket=self._s3_bucket, Key=self._key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                log.warning("S3 did not abort an upload: HTTP %s %s", _status(exc), _code(exc))
        except BotoCoreError as exc:
            log.warning("S3 did not abort an upload: %s", type(exc).__name__)

    async def _finish(self) -> None:
        """Unless the upload was published: stop sending parts and abort the multipart
        upload, so that neither an object nor a pending upload is left in S3."""
        if not self._completed:
            await self._stop_sending()
            await self._abort_upload()

    async def _commit(
        self, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        """Verify the body, then publish it atomically if ``condition`` accepts the current
        version (race-free where the service honours conditional writes: the publish is
        conditional on the version checked). Nothing is left in S3 if this raises."""
        packed, info = self._verified_version(sha256, content_length)
        publish: Callable[[dict[str, str]], Awaitable[object]]
        if self._upload_id is None:
            metadata = _full_metadata(info)
            trailer = place_checksums(metadata, "qs-checksums", packed, METADATA_LIMIT)
            body = bytes(self._pending) + trailer
            params: dict[str, Any] = {
                "Bucket": self._s3_bucket,
                "Key": self._key,
                "Body": body,
                "Metadata": metadata,
            }
            if self._content_type:
                params["ContentType"] = self._content_type

            def publish(conditions: dict[str, str]) -> Awaitable[object]:
                return self._store._in_bucket(
                    self._s3_bucket,
                    lambda: self._store._request("put_object", **params, **conditions),
                    "store an object",
                )

        else:
            footer = FOOTER.pack(FOOTER_MAGIC, info.size, info.mtime_ns, info.sha256)
            await self._send_piece(bytes(self._pending) + packed + footer)
            self._pending = bytearray()
            await self._drain()
            parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(self._parts)]
            upload_id = self._upload_id

            def publish(conditions: dict[str, str]) -> Awaitable[object]:
                return self._store._request(
                    "complete_multipart_upload",
                    Bucket=self._s3_bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **conditions,
                )

        async def publish_if_accepted() -> ObjectInfo:
            current = await self._store._head(self._bucket, self._s3_bucket, self._key)
            condition(current.info.etag if current is not None and current.info else None)
            conditions = (
                {"IfMatch": current.s3_etag} if current is not None else {"IfNoneMatch": "*"}
            )
            try:
                await publish(conditions)
            except ClientError as exc:
                if _lost_race(exc):
                    raise LostRace from None  # another commit came between check and publish
                if _code(exc) == "NoSuchUpload":
                    raise RequestError(
                        ErrorCode.QS_UNAVAILABLE, "S3 dropped the multipart upload; retry"
                    ) from None
                raise _service_error(exc, "store an object") from None
            except BotoCoreError as exc:
                raise _service_error(exc, "store an object") from None
            self._completed = True
            self._upload_id = None
            return info

        return await retry_lost_races(
            publish_if_accepted, "too many concurrent writes to this key; retry"
        )


# --- the store ----------------------------------------------------------------------------


class S3Store:
    """Buckets as S3 buckets and objects as S3 objects; see the module docstring for the
    mapping and its guarantees."""

    def __init__(self, config: S3StoreConfig) -> None:
        """A store over ``config``'s service (no request made, no connection opened yet:
        :meth:`connect` does both). ValueError for a malformed URL, region, prefix or size."""
        prefix = config.bucket_prefix
        if len(prefix) > 62 or not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(
                f"S3 bucket prefix {prefix!r}: lowercase letters, digits, '.' and '-', "
                "starting with a letter or digit, at most 62 characters"
            )
        if config.endpoint_url is not None:
            parts = urlsplit(config.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"S3 endpoint URL {config.endpoint_url!r}: expected http(s)://HOST[:PORT]"
                )
        if config.region is not None and not _REGION_RE.fullmatch(config.region):
            raise ValueError(f"S3 region {config.region!r}: letters, digits and '-'")
        if config.addressing_style not in (None, "path", "virtual", "auto"):
            raise ValueError("S3 addressing style: path, virtual or auto")
        if not MIN_PART_SIZE <= config.part_size <= MAX_PART_SIZE:
            raise ValueError(f"S3 part size: {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes")
        if config.parts_in_flight < 1 or config.heads_in_flight < 1:
            raise ValueError("parts_in_flight and heads_in_flight must be positive")
        if config.retries is not None and config.retries < 0:
            raise ValueError("retries must not be negative")
        if (config.access_key_id is None) != (config.secret_access_key is None):
            raise ValueError("S3 credentials: give both the access key ID and the secret key")
        self.config = config
        self._session = _session()
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    async def connect(cls, config: S3StoreConfig) -> S3Store:
        """A store whose service answered one request. ValueError without credentials;
        ConnectionError (naming the endpoint, never the keys) if the service is unreachable
        or refuses the credentials."""
        store = cls(config)
        try:
            await store.start()
            await store._check()
        except BaseException:
            await store.close()
            raise
        return store

    async def start(self) -> None:
        """Create the HTTP client (no request made). ValueError without credentials."""
        if self._client is not None:
            return
        config = self.config
        if config.access_key_id is None and await self._session.get_credentials() is None:
            raise ValueError(
                "no AWS credentials for the S3 store: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a shared credentials file"
            )
        style = config.addressing_style or ("path" if config.endpoint_url else "auto")
        if config.retries is not None:
            attempts = config.retries + 1
        else:
            attempts = int(self._session.get_config_variable("max_attempts") or 3)
        client_config = AioConfig(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": style},
            max_pool_connections=32,
        )
        region = config.region or self._session.get_config_variable("region") or "us-east-1"
        try:
            self._client = await self._stack.enter_async_context(
                self._session.create_client(
                    "s3",
                    endpoint_url=config.endpoint_url,
                    region_name=region,
                    aws_access_key_id=config.access_key_id,
                    aws_secret_access_key=config.secret_access_key,
                    aws_session_token=config.session_token,
                    config=client_config,
                )
            )
        except (BotoCoreError, NoRegionError) as exc:
            raise ValueError(f"S3 client: {exc}") from None

    async def _check(self) -> None:
        """One request (ListBuckets); AccessDenied counts as an answer (credentials that may
        only reach some buckets)."""
        try:
            await self._request("list_buckets")
        except ClientError as exc:
            if _code(exc) == "AccessDenied":
                return
            raise ConnectionError(
                f"S3 at {self.endpoint} did not accept a request (HTTP {_status(exc)} {_code(exc)})"
            ) from None
        except NoCredentialsError:
            raise ValueError("no AWS credentials for the S3 store") from None
        except BotoCoreError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConnectionError(
                f"S3 at {self.endpoint} did not accept a request ({reason})"
            ) from None

    @property
    def endpoint(self) -> str:
        """The service's URL (no credentials)."""
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        return self.config.endpoint_url or "AWS S3"

    def s3_bucket_name(self, bucket: str) -> str:
        """The S3 bucket that holds ``bucket`` (QS_INVALID_KEY if S3 cannot name it)."""
        return s3_bucket_name(self.config.bucket_prefix, bucket)

    async def _request(self, operation: str, **params: Any) -> dict[str, Any]:
        """One S3 operation (botocore's name for it); raises ClientError or BotoCoreError."""
        if self._client is None:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "S3 store not started")
        result = await getattr(self._client, operation)(**params)
        return cast(dict[str, Any], result)

    async def _create_bucket(self, s3_bucket: str) -> None:
        params: dict[str, Any] = {"Bucket": s3_bucket}
        region = str(self._client.meta.region_name)
        if region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._request("create_bucket", **params)
        except ClientError as exc:
            if _code(exc) == "BucketAlreadyOwnedByYou":
                return  # another gateway created it meanwhile
            if _code(exc) == "BucketAlreadyExists":
                raise RequestError(
                    ErrorCode.QS_INTERNAL_ERROR,
                    f"S3 bucket {s3_bucket!r} belongs to another account: choose a bucket prefix",
                ) from None
            raise _service_error(exc, "create a bucket") from None
        except BotoCoreError as exc:
            raise _service_error(exc, "create a bucket") from None

    async def _in_bucket(
        self, s3_bucket: str, op: Callable[[], Awaitable[dict[str, Any]]], what: str
    ) -> dict[str, Any]:
        """``op()``, creating the S3 bucket first if it does not exist yet (other errors
        are raised as they are)."""
        try:
            return await op()
        except ClientError as exc:
            if _code(exc) != "NoSuchBucket":
                raise
        await self._create_bucket(s3_bucket)
        return await op()

    async def _get_range_into(
        self, s3_bucket: str, key: str, s3_etag: str, offset: int, buffer: memoryview, what: str
    ) -> int:
        """Bytes ``[offset, offset + len(buffer))`` of the version ``s3_etag`` into
        ``buffer``; the count. ClientError 412 if the object is another version now."""
        if len(buffer) == 0:
            return 0
        result = await self._request(
            "get_object",
            Bucket=s3_bucket,
            Key=key,
            Range=f"bytes={offset}-{offset + len(buffer) - 1}",
            IfMatch=s3_etag,
        )
        body = result["Body"]
        got = 0
        try:
            while True:
                chunk = await body.read(min(_READ_PIECE, len(buffer) - got + 1))
                if not chunk:
                    return got
                if got + len(chunk) > len(buffer):
                    raise RequestError(
                        ErrorCode.QS_INTERNAL_ERROR, f"S3 sent too many bytes ({what})"
                    )
                buffer[got : got + len(chunk)] = chunk
                got += len(chunk)
        finally:
            await _close_body(body)

    async def _head(
        self, bucket: str, s3_bucket: str, key: str, *, broken_ok: bool = False
    ) -> _Version | None:
        """The object's current version, or None if there is none (QS_INTERNAL_ERROR if
        quicstore metadata is there but broken; with ``broken_ok`` a version without info)."""
        for _ in range(COMMIT_ATTEMPTS):
            try:
                head = await self._request("head_object", Bucket=s3_bucket, Key=key)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise _service_error(exc, "read an object's metadata") from None
            except BotoCoreError as exc:
                raise _service_error(exc, "read an object's metadata") from None
            try:
                etag, stored, metadata, extra = _parse_head(head)
                if extra is None:
                    return _Version(etag, stored, None, None)
                footer = None
                if metadata.get("qs-checksums") == "footer":
                    if stored < FOOTER.size:
                        raise _Broken("short")
                    out = bytearray(FOOTER.size)
                    try:
                        got = await self._get_range_into(
                            s3_bucket, key, etag, stored - FOOTER.size, memoryview(out), "read"
                        )
                    except ClientError as exc:
                        if _status(exc) == 412 or _is_missing(exc):
                            continue  # replaced or deleted since the HEAD: look again
                        raise _service_error(exc, "read an object's footer") from None
                    except BotoCoreError as exc:
                        raise _service_error(exc, "read an object's footer") from None
                    footer = bytes(out[:got])
                return _build_version(bucket, key, etag, stored, metadata, extra, footer)
            except _Broken:
                log.warning(
                    "S3 object %r in bucket %r has broken quicstore metadata", key, s3_bucket
                )
                if broken_ok:
                    return _Version(str(head["ETag"]), int(head["ContentLength"]), None, None)
                raise RequestError(
                    ErrorCode.QS_INTERNAL_ERROR, "stored object metadata is broken"
                ) from None
        raise RequestError(ErrorCode.QS_UNAVAILABLE, "object replaced too often while read")

    async def _current(self, bucket: str, key: str) -> tuple[str, _Version]:
        s3_bucket = self.s3_bucket_name(bucket)
        version = await self._head(bucket, s3_bucket, key)
        if version is None or version.info is None:
            raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
        return s3_bucket, version

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The current version's metadata (QS_NOT_FOUND if none)."""
        _, version = await self._current(bucket, key)
        assert version.info is not None
        return version.info

    async def open(self, bucket: str, key: str) -> _Reader:
        """The current version, pinned by its ETag (QS_NOT_FOUND if none)."""
        s3_bucket, version = await self._current(bucket, key)
        return _Reader(self, s3_bucket, key, version)

    async def create(
        self,
        bucket: str,
        key: str,
        *,
        block_size: int,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> _Writer:
        """Start an upload (QS_INVALID_KEY for a bucket S3 cannot name,
        QS_METADATA_TOO_LARGE if its metadata cannot fit S3's 2 KiB)."""
        s3_bucket = self.s3_bucket_name(bucket)
        check_metadata_room(
            _full_metadata,
            "qs-checksums",
            METADATA_LIMIT,
            "S3",
            bucket=bucket,
            key=key,
            block_size=block_size,
            content_type=content_type,
            meta=meta or {},
        )
        return _Writer(self, bucket, key, s3_bucket, block_size, content_type, dict(meta or {}))

    async def delete(self, bucket: str, key: str, condition: Condition) -> ObjectInfo:
        """Remove the current version if ``condition`` accepts it (the delete carries
        ``If-Match`` on the version checked); return what was removed."""
        s3_bucket = self.s3_bucket_name(bucket)

        async def delete_if_accepted() -> ObjectInfo:
            version = await self._head(bucket, s3_bucket, key)
            info = deletable(condition, version.info if version is not None else None)
            assert version is not None
            try:
                await self._request(
                    "delete_object", Bucket=s3_bucket, Key=key, IfMatch=version.s3_etag
                )
            except ClientError as exc:
                if _lost_race(exc) or _is_missing(exc):
                    raise LostRace from None  # replaced or deleted since the check
                raise _service_error(exc, "delete an object") from None
            except BotoCoreError as exc:
                raise _service_error(exc, "delete an object") from None
            return info

        return await retry_lost_races(delete_if_accepted, "too many concurrent writes to this key")

    async def _listed_info(
        self, bucket: str, s3_bucket: str, key: str, gate: asyncio.Semaphore
    ) -> ObjectInfo | None:
        async with gate:  # a broken object is logged and left out, not an error of the list
            version = await self._head(bucket, s3_bucket, key, broken_ok=True)
        return version.info if version is not None else None

    async def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        continuation: str | None = None,
        limit: int = 1000,
    ) -> ListPage:
        """One page of keys starting with ``prefix``, rolled up at ``delimiter``, after
        ``continuation`` (QS_BAD_REQUEST if the token is not one of ours)."""
        token = (
            decode_token(continuation, _Continuation).token if continuation is not None else None
        )
        s3_bucket = self.s3_bucket_name(bucket)
        params: dict[str, Any] = {
            "Bucket": s3_bucket,
            "Prefix": prefix,
            "MaxKeys": max(1, min(limit, LIST_MAX)),
        }
        if delimiter:
            params["Delimiter"] = delimiter
        if token is not None:
            params["ContinuationToken"] = token
        try:
            result = await self._request("list_objects_v2", **params)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                return ListPage(entries=[], prefixes=[], next=None)
            if _status(exc) == 400 and token is not None:
                raise RequestError(ErrorCode.QS_BAD_REQUEST, "stale continuation token") from None
            raise _service_error(exc, "list objects") from None
        except BotoCoreError as exc:
            raise _service_error(exc, "list objects") from None
        gate = asyncio.Semaphore(self.config.heads_in_flight)
        found = await asyncio.gather(
            *(
                self._listed_info(bucket, s3_bucket, str(item["Key"]), gate)
                for item in result.get("Contents") or ()
            )
        )
        entries = sorted((i for i in found if i is not None), key=lambda e: e.key.encode())
        prefixes = sorted(
            (str(p["Prefix"]) for p in result.get("CommonPrefixes") or ()),
            key=lambda p: p.encode(),
        )
        next_token = result.get("NextContinuationToken") if result.get("IsTruncated") else None
        return ListPage(
            entries=entries,
            prefixes=prefixes,
            next=encode_token(_Continuation(str(next_token))) if next_token else None,
        )

    async def close(self) -> None:
        """Close the HTTP connections to the service."""
        self._client = None
        await self._stack.aclose()
