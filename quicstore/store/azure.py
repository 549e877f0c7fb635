"""A store over Azure Blob Storage (the async ``azure-storage-blob`` SDK), so that any number
of stateless gateways can serve one storage account.

Naming. Bucket ``b`` is the container ``<container_prefix>b``; key ``k`` is the block blob
``k`` in it, holding exactly the object's bytes (other Azure tools read it as it is). Azure
container names are 3 to 63 characters of lowercase letters, digits and ``-``, start and end
with a letter or digit and have no ``--``; quicstore bucket names may also hold ``_`` and
``.`` and be 1 or 2 characters long. A bucket whose container name would break Azure's rule
gets QS_INVALID_KEY (the spec's code for names that break the naming rules) before any
request reaches Azure. Containers are created on the first PUT into them.

Per version, the blob's metadata keeps what the disk store's index keeps (ObjectInfo):
``qs_format`` (``1``), ``qs_size`` (bytes), ``qs_sha256`` (hex), ``qs_block_size`` (bytes),
``qs_mtime_ns`` (ns since the Unix epoch), ``qs_meta`` (base64 of msgpack: content type and
the user's meta map, only when there is one) and ``qs_checksums``: ``inline:<base64>`` of the
packed big-endian CRC32C of every block, or ``trailer`` when they do not fit Azure's 8 KiB
metadata limit (objects above about 90 MiB at 64 KiB blocks). A trailer is the packed
checksums appended after the object's bytes in the same blob, so that they are published by
the same atomic commit as the data and pinned by the same ETag (a reader of the blob's first
``qs_size`` bytes still gets exactly the object). Blobs without ``qs_format`` were not
written through quicstore: they have no checksums, are not listed and read as absent.

Reading. :meth:`AzureStore.open` reads the blob's properties; every later ranged download
(:meth:`ObjectReader.read_into`, trailer checksums) carries ``If-Match`` with the Azure ETag
seen at open. Reads are served from read-ahead windows (1 MiB growing to 8 MiB, the next one
downloading while one is read, streamed as they arrive) shared by all readers of the same
version, so the parallel part GETs of one fan-out read share them too; at most
``read_ahead_memory`` bytes (64 MiB) of windows per store, that is per gateway process (see
``_Reader`` for the policy and the bound per reader). If the blob is replaced or deleted
meanwhile, a read that needs a new download fails with QS_PRECONDITION_FAILED (the client
reports ObjectChanged), never with bytes of two versions. Unlike the disk store, a replaced
version stops being readable once its downloaded windows are read: Azure keeps no old
version to read without blob versioning.

Writing. A PUT body is cut into staged blocks of ``stage_block_size`` bytes, staged as it
arrives (``stages_in_flight`` at once); bodies that never fill one block are sent with one
Put Blob at commit. Nothing is visible before the commit: staged blocks belong to no
committed blob. The commit reads the current version, asks the caller's condition about its
quicstore ETag, then publishes with ``If-Match`` on that version's Azure ETag (or
``If-None-Match: *`` when there is none), so no other commit can slip in between the check
and the publish; if one did, the check is repeated. An aborted upload commits nothing; its
staged blocks are discarded by Azure (at the key's next commit, or after 7 days).

Azure keeps one list of uncommitted blocks per blob name and empties it at every commit, so
of two multi-block uploads of one key at the same moment, the one committed second finds its
blocks gone: it fails with QS_UNAVAILABLE (retry), the first one stands. Uploads of different
keys never interfere, nor do single-block ones (Put Blob replaces atomically).

LIST pages are Azure's own (``maxresults`` counts blobs and rolled-up prefixes, as in the
spec), with Azure's continuation marker wrapped in quicstore's opaque token, so any gateway
continues any other's listing. Keys are listed in the service's order, which is byte order
for everything but keys mixing characters U+E000..U+FFFF with characters above U+FFFF
(Azurite compares UTF-16 code units there).

Errors: QS_NOT_FOUND, QS_PRECONDITION_FAILED as the spec says; QS_UNAVAILABLE when Azure is
unreachable, busy (503) or a concurrent upload won; QS_INTERNAL_ERROR for other failures of
the service (logged with Azure's error code, never with credentials).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import io
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar, cast

import aiohttp
import msgspec
from azure.core import MatchConditions
from azure.core.async_paging import AsyncPageIterator
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob.aio import (
    BlobClient,
    BlobPrefix,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)

from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.semantics import etag_from_sha256
from .base import Condition, ListPage, ObjectInfo, decode_token, deletable, encode_token
from .remote import (
    BufferedUpload,
    LostRace,
    check_metadata_room,
    decode_content_meta,
    encode_content_meta,
    place_checksums,
    placed_checksums,
    retry_lost_races,
)

log = logging.getLogger("quicstore.store.azure")
T = TypeVar("T")
MIB = 1024 * 1024

API_VERSION = "2025-11-05"
"""Azure Storage REST API version the store speaks (tested against Azurite 3.35, which
rejects the SDK's newer default)."""
METADATA_LIMIT = 8000
"""Bytes of metadata names and values a blob may carry (Azure allows 8 KiB; some slack)."""
MAX_BLOCKS = 50_000
"""Blocks one Azure block blob may have."""
LIST_MAX = 5000
"""Largest page Azure's List Blobs returns."""
READ_AHEAD_LINGER = 2.0
"""Seconds the read-ahead windows of a version outlive its last open reader (the next part
of a fan-out GET opens its reader a moment after the one before closed)."""
RUN_ENDS = 8
"""Ends of runs of reads remembered per version (that many sequential readers at once)."""
SPARE_WINDOWS = 4
"""Buffers of dropped windows a store keeps for the next windows (within its budget)."""
BLOB_CLIENTS = 256
"""Blob clients a store keeps, most recently used."""

_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*")
_PREFIX_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9]|-(?!-))*)?")


@dataclass(frozen=True)
class AzureStoreConfig:
    """How to reach the storage account and how to write to it."""

    connection_string: str
    """An Azure Storage connection string (account key or SAS). Never logged."""
    container_prefix: str = ""
    """Prepended to every bucket name to make its container name (lowercase letters, digits
    and single ``-``); lets several deployments share one account."""
    api_version: str = API_VERSION
    """REST API version sent to the service."""
    stage_block_size: int = 4 * MIB
    """Bytes per staged block, and the largest body sent as one Put Blob: what an upload
    holds in memory per block in flight."""
    stages_in_flight: int = 2
    """Staged blocks one upload sends at once (memory: this times ``stage_block_size``)."""
    retries: int = 2
    """Retries of a failed HTTP request by the SDK (exponential back-off from 1 s), so a
    request gives up after a few seconds rather than minutes."""
    connection_timeout: int = 5
    """Seconds to open a connection to the service."""
    read_timeout: int = 30
    """Seconds to wait for the service's response bytes."""
    read_ahead: int = 8 * MIB
    """Largest read-ahead window, bytes: the largest ranged download (see ``_Reader``; more
    than 4 MiB, so that Azurite does not read the range twice for its MD5); 0: no windows,
    every read is one request of exactly its size, into the caller's buffer."""
    read_ahead_first: int = 1 * MIB
    """Bytes of the first window of a run of reads (at least the read itself): what a small
    read of a large object downloads."""
    read_ahead_depth: int = 1
    """Windows kept downloading after the one being read, once reads run on."""
    read_ahead_memory: int = 64 * MIB
    """Bytes of read-ahead windows (and kept window buffers) all readers of the store hold
    together: the store's, so the gateway's, bound on read-ahead memory."""


def _proxy_configured() -> bool:
    """An HTTP proxy is set in the environment. Only then does aiohttp need to look at the
    environment (``trust_env``): otherwise it reads the proxy variables and ``~/.netrc`` in
    a worker thread for every request (a properties request took 4.1-4.5 ms of CPU with,
    3.1-3.6 ms without, here)."""
    names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
    return any(os.environ.get(n) or os.environ.get(n.lower()) for n in names)


def container_name(prefix: str, bucket: str) -> str:
    """The container of ``bucket``: ``prefix + bucket``, or QS_INVALID_KEY if Azure would
    reject that name (3-63 of ``a-z 0-9 -``, letter or digit at both ends, no ``--``)."""
    name = prefix + bucket
    if not 3 <= len(name) <= 63 or not _CONTAINER_RE.fullmatch(name):
        raise RequestError(
            ErrorCode.QS_INVALID_KEY,
            f"bucket {bucket!r} cannot be stored in Azure: container name {name!r} must be "
            "3 to 63 lowercase letters, digits and single '-', starting and ending with a "
            "letter or digit",
        )
    return name


def _error_code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        return str(code.value)
    return str(code) if code is not None else ""


def _service_error(exc: AzureError, what: str) -> RequestError:
    """The spec's error for a failure of the service while trying to ``what``."""
    status = getattr(exc, "status_code", None)
    code = _error_code(exc)
    log.warning("Azure Storage failed to %s: %s %s", what, status or type(exc).__name__, code)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return RequestError(ErrorCode.QS_UNAVAILABLE, f"Azure Storage unreachable ({what})")
    if status == 503 or code in ("ServerBusy", "OperationTimedOut"):
        return RequestError(ErrorCode.QS_UNAVAILABLE, f"Azure Storage busy ({what})")
    detail = f"HTTP {status} {code}".strip() if status else type(exc).__name__
    return RequestError(ErrorCode.QS_INTERNAL_ERROR, f"Azure Storage failed to {what}: {detail}")


# --- what a blob's metadata says --------------------------------------------------------


def _base_metadata(info: ObjectInfo) -> dict[str, str]:
    """Everything but the checksums."""
    metadata = {
        "qs_format": "1",
        "qs_size": str(info.size),
        "qs_sha256": info.sha256.hex(),
        "qs_block_size": str(info.block_size),
        "qs_mtime_ns": str(info.mtime_ns),
    }
    content_meta = encode_content_meta(info.content_type, info.meta)
    if content_meta is not None:
        metadata["qs_meta"] = content_meta
    return metadata


@dataclass(frozen=True, slots=True)
class _Version:
    """What one blob's properties say."""

    azure_etag: str
    info: ObjectInfo | None
    """None for a blob not written through quicstore."""
    checksums: bytes | None
    """Packed CRC32Cs when kept in the metadata; None when in the trailer."""


def _parse(bucket: str, key: str, props: BlobProperties) -> _Version:
    """The version a blob's properties describe (QS_INTERNAL_ERROR if quicstore metadata is
    there but broken)."""
    metadata = props.metadata or {}
    etag = str(props.etag)
    if metadata.get("qs_format") != "1":
        return _Version(etag, None, None)
    try:
        size = int(metadata["qs_size"])
        block_size = int(metadata["qs_block_size"])
        extra = decode_content_meta(metadata.get("qs_meta"))
        sha256 = bytes.fromhex(metadata["qs_sha256"])
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            etag=etag_from_sha256(sha256),
            mtime_ns=int(metadata["qs_mtime_ns"]),
            block_size=block_size,
            sha256=sha256,
            content_type=extra.content_type,
            meta=dict(extra.meta),
        )
        blocks = -(-size // block_size) if block_size > 0 else -1
        checksums, stored = placed_checksums(metadata["qs_checksums"], size, blocks)
        if block_size <= 0 or len(sha256) != 32 or props.size != stored:
            raise ValueError("sizes")
    except (KeyError, ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError):
        log.warning("blob %r in container %r has broken quicstore metadata", key, props.container)
        raise RequestError(
            ErrorCode.QS_INTERNAL_ERROR, "stored object metadata is broken"
        ) from None
    return _Version(etag, info, checksums)


class _Continuation(msgspec.Struct, array_like=True, tag="az"):
    marker: str
    """Azure's NextMarker."""


# --- reading ------------------------------------------------------------------------------


_DOWNLOAD_ERRORS = {404: ResourceNotFoundError, 412: ResourceModifiedError}
"""Statuses of a ranged download mapped to the SDK's exceptions (the generated operation maps
only 404 itself)."""


async def _piece(content: aiohttp.StreamReader) -> bytes:
    """The next piece of a response body as aiohttp's parser buffered it, never joined with
    others (the SDK's stream reads fixed sizes: a join of several pieces, or a slice of
    one); b"" at its end. aiohttp's errors as the SDK's."""
    while True:
        try:
            piece, _ = await content.readchunk()
        except aiohttp.ClientPayloadError as exc:
            raise IncompleteReadError(exc, error=exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceResponseError(exc, error=exc) from exc
        if piece or content.at_eof():
            return piece


async def _download(
    blob: BlobClient,
    etag: str,
    start: int,
    view: memoryview,
    progress: Callable[[int], None] | None,
    retries: int,
    what: str,
) -> None:
    """Bytes ``[start, start + len(view))`` of the version with Azure ETag ``etag`` into
    ``view``, as they arrive: one ranged Get Blob with ``If-Match``, its body streamed
    straight into ``view``, ``progress(bytes so far)`` after each piece. Each piece is
    copied once, from the bytes aiohttp's parser made of what the socket gave (the SDK's
    downloader would join the whole response in memory, then slice it again). A body cut
    short is resumed from where it stopped, up to ``retries`` times (failures before a
    response are the SDK's retry policy's). QS_PRECONDITION_FAILED once the version is
    replaced or deleted."""
    ops = cast(Any, blob)._client.blob  # the generated REST operation: streams its body
    filled, resumed = 0, 0
    while filled < len(view):
        begin = start + filled
        body: Any = None
        try:
            body = await ops.download(
                range=f"bytes={begin}-{start + len(view) - 1}",
                headers={"If-Match": etag},
                error_map=_DOWNLOAD_ERRORS,
                decompress=False,
            )
            headers = body.response.headers
            if not str(headers.get("Content-Range", "")).startswith(f"bytes {begin}-"):
                raise RequestError(
                    ErrorCode.QS_INTERNAL_ERROR, "Azure answered with another byte range"
                )
            content = body.response.internal_response.content  # the store's AioHttpTransport
            while chunk := await _piece(content):
                n = len(chunk)
                if filled + n > len(view):
                    raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "Azure sent too many bytes")
                view[filled : filled + n] = chunk
                filled += n
                if progress is not None:
                    progress(filled)
            if filled < len(view):
                raise IncompleteReadError("body ended early")
        except ResourceModifiedError:
            raise RequestError(
                ErrorCode.QS_PRECONDITION_FAILED, "object replaced while being read"
            ) from None
        except ResourceNotFoundError:
            raise RequestError(
                ErrorCode.QS_PRECONDITION_FAILED, "object deleted while being read"
            ) from None
        except (IncompleteReadError, ServiceResponseError) as exc:
            if body is None or resumed >= retries:
                raise _service_error(exc, what) from None
            resumed += 1
            log.info("Azure download cut at %d of %d bytes; resuming", filled, len(view))
        except AzureError as exc:
            raise _service_error(exc, what) from None
        finally:
            if body is not None:
                body.response.internal_response.close()  # no-op once the body was read


class _Window:
    """Bytes ``[start, end)`` of one pinned version: downloading (``filled`` bytes so far)
    or downloaded, shared by every reader of that version."""

    __slots__ = (
        "buf",
        "end",
        "error",
        "filled",
        "run",
        "served",
        "start",
        "task",
        "users",
        "waiters",
    )

    def __init__(self, start: int, run: int, buf: bytearray) -> None:
        self.start = start
        self.end = start + len(buf)
        self.run = run
        """Bytes of the run of adjacent windows ending with this one."""
        self.buf = buf
        self.users = 0
        """Reads between finding this window and copying their bytes out of it."""
        self.filled = 0
        self.served = 0
        """Bytes copied out to readers: all of them once ``served`` reaches the size."""
        self.error: tuple[int, str] | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    def progress(self, filled: int) -> None:
        self.filled = filled
        for need, fut in self.waiters:
            if need <= filled and not fut.done():
                fut.set_result(None)

    def fail(self, code: int, reason: str) -> None:
        self.error = (code, reason)
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, need: int) -> None:
        """Until the first ``need`` bytes are here (the download's error if it failed
        before them)."""
        while self.filled < need:
            if self.error is not None:
                raise RequestError(*self.error)
            entry = (need, asyncio.get_running_loop().create_future())
            self.waiters.append(entry)
            try:
                await entry[1]
            finally:
                self.waiters.remove(entry)


class _Pinned:
    """One version (container, key, Azure ETag) while readers have it open: the read-ahead
    windows all its readers share, and where runs of adjacent reads ended."""

    def __init__(self, ident: tuple[str, str, str], blob: BlobClient, version: _Version) -> None:
        assert version.info is not None
        self.ident = ident
        self.blob = blob
        self.version = version
        self.size = version.info.size
        self.windows: list[_Window] = []
        """Disjoint, by start."""
        self.run_ends: dict[int, int] = {}
        """End offset -> bytes of the run of adjacent windows that ended there (a few)."""
        self.read: list[tuple[int, int]] = []
        """Disjoint ranges ``[start, end)`` of windows read whole and dropped (a few): not
        read ahead again until a read asks for them anew."""
        self.readers = 0
        self.linger: asyncio.TimerHandle | None = None

    def find(self, offset: int) -> _Window | None:
        for w in self.windows:
            if w.start <= offset < w.end:
                return w
        return None

    def was_read(self, offset: int) -> bool:
        return any(a <= offset < b for a, b in self.read)

    def mark_read(self, start: int, end: int) -> None:
        spans = sorted([*self.read, (start, end)])
        merged = [spans[0]]
        for a, b in spans[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        self.read = merged[-RUN_ENDS:]

    def unmark_read(self, offset: int) -> None:
        """A read asks for ``offset`` again: bytes from there on may be read ahead again."""
        self.read = [(a, min(b, offset)) for a, b in self.read if a < offset]

    def room(self, offset: int) -> int:
        """Bytes from ``offset`` before the next window or the end of the object."""
        nxt = min((w.start for w in self.windows if w.start > offset), default=self.size)
        return min(nxt, self.size) - offset


class _ReadAhead:
    """The read-ahead windows of every version a store's readers have open, within one
    memory budget: ``read_ahead_memory`` bytes of window buffers in all (see ``_Reader``)."""

    def __init__(self, config: AzureStoreConfig) -> None:
        self.first = max(1, min(config.read_ahead_first, config.read_ahead))
        self.largest = config.read_ahead
        self.depth = config.read_ahead_depth
        self.budget = config.read_ahead_memory
        self.used = 0
        """Bytes of window buffers held (at most ``budget``)."""
        self.retries = config.retries
        self.pinned: dict[tuple[str, str, str], _Pinned] = {}
        self._lru: dict[_Window, _Pinned] = {}
        """Every window, least recently used first."""
        self._spares: list[bytearray] = []
        """Buffers of dropped windows, oldest first, for the next windows of their size
        (counted in ``used``; at most ``SPARE_WINDOWS``, the largest kept): a new 8 MiB
        bytearray costs zeroing and page faults (2-4 ms here), a reused one nothing."""

    def pin(
        self, container: str, key: str, version: _Version, blob: Callable[[], BlobClient]
    ) -> _Pinned:
        """The shared state of ``version`` (``blob()`` makes its client if it is new)."""
        ident = (container, key, version.azure_etag)
        p = self.pinned.get(ident)
        if p is None:
            p = self.pinned[ident] = _Pinned(ident, blob(), version)
        if p.linger is not None:
            p.linger.cancel()
            p.linger = None
        p.readers += 1
        return p

    def unpin(self, p: _Pinned) -> None:
        p.readers -= 1
        if p.readers == 0 and self.pinned.get(p.ident) is p:
            # Kept a moment for the next part of a fan-out GET, then dropped.
            p.linger = asyncio.get_running_loop().call_later(READ_AHEAD_LINGER, self.forget, p)

    def forget(self, p: _Pinned) -> None:
        if p.readers == 0 and self.pinned.get(p.ident) is p:
            del self.pinned[p.ident]
            for w in list(p.windows):
                self.drop(p, w)

    def touch(self, p: _Pinned, w: _Window) -> None:
        if w in self._lru:
            del self._lru[w]
            self._lru[w] = p

    def drop(self, p: _Pinned, w: _Window, stop: bool = True) -> None:
        """Forget ``w`` and, with ``stop``, stop its download (reads already holding it
        finish). Its buffer is kept for another window if nothing can touch it any more."""
        if self._lru.pop(w, None) is None:
            return
        p.windows.remove(w)
        running = w.task is not None and not w.task.done()
        if running and stop:
            assert w.task is not None
            w.task.cancel()
            w.fail(ErrorCode.QS_UNAVAILABLE, "read-ahead stopped")  # even if it never ran
        if running or w.users:
            self.used -= w.size
            return
        self._spares.append(w.buf)
        if len(self._spares) > SPARE_WINDOWS:  # let go of the smallest (cheapest to remake)
            smallest = min(range(len(self._spares)), key=lambda i: len(self._spares[i]))
            self.used -= len(self._spares.pop(smallest))

    def _reserve(self, size: int, demand: bool) -> bytearray | None:
        """A buffer of ``size`` bytes within the budget: a kept one of that size, or a new
        one once there is room, made by letting go of kept buffers, then of least recently
        used windows no read is using (any for a read that needs bytes now, only those of
        versions no reader has open for read-ahead); None if there is none."""
        if size > self.budget:
            return None
        lru: Iterator[tuple[_Window, _Pinned]] | None = None
        while True:
            for i, buf in enumerate(self._spares):
                if len(buf) == size:
                    return self._spares.pop(i)  # already counted in used
            if self.used + size <= self.budget:
                self.used += size
                return bytearray(size)
            if self._spares:
                self.used -= len(self._spares.pop(0))
                continue
            lru = lru or iter(list(self._lru.items()))
            for w, p in lru:
                if w.users == 0 and (demand or p.readers == 0):
                    self.drop(p, w)  # its buffer may be the one wanted: look again
                    break
            else:
                return None

    def open_window(
        self, p: _Pinned, start: int, length: int, run: int, demand: bool, least: int = 0
    ) -> _Window | None:
        """A new window from ``start`` of ``length`` bytes (clipped at the next window and
        the object's end; down to ``least`` bytes if memory is short), downloading; None if
        there is no room."""
        length = min(length, p.room(start))
        if length <= 0:
            return None
        while (buf := self._reserve(length, demand)) is None:
            if length <= least or not least:
                return None
            length = max(least, length // 2)
        run += length
        w = _Window(start, run, buf)
        bisect.insort(p.windows, w, key=lambda x: x.start)
        self._lru[w] = p
        p.run_ends[w.end] = run
        while len(p.run_ends) > RUN_ENDS:
            del p.run_ends[next(iter(p.run_ends))]
        w.task = asyncio.get_running_loop().create_task(self._fill(p, w))
        log.debug(
            "Azure read-ahead %s/%s bytes %d-%d (%s)",
            p.ident[0],
            p.ident[1],
            w.start,
            w.end - 1,
            "read" if demand else "ahead",
        )
        return w

    async def _fill(self, p: _Pinned, w: _Window) -> None:
        try:
            await _download(
                p.blob,
                p.version.azure_etag,
                w.start,
                memoryview(w.buf),
                w.progress,
                self.retries,
                "read an object",
            )
        except RequestError as exc:
            self.drop(p, w, stop=False)  # the next read of these bytes asks again
            w.fail(exc.code, exc.reason)
        except asyncio.CancelledError:
            w.fail(ErrorCode.QS_UNAVAILABLE, "read-ahead stopped")
            raise
        except Exception as exc:  # a bug, or an error the SDK did not wrap
            log.exception("Azure read-ahead failed")
            self.drop(p, w, stop=False)
            w.fail(ErrorCode.QS_INTERNAL_ERROR, f"read-ahead failed: {type(exc).__name__}")

    def ahead(self, p: _Pinned, w: _Window) -> None:
        """Keep ``depth`` windows downloading or downloaded after ``w``, each as long as
        the run so far (``read_ahead_first`` to ``read_ahead`` bytes)."""
        cur = w
        for _ in range(self.depth):
            if cur.end >= p.size:
                return
            nxt = p.find(cur.end)
            if nxt is None:
                if p.was_read(cur.end):
                    return  # another reader went through there already
                length = min(self.largest, max(self.first, cur.run))
                nxt = self.open_window(p, cur.end, length, cur.run, demand=False)
                if nxt is None:
                    return
            cur = nxt

    def close(self) -> None:
        for p in list(self.pinned.values()):
            if p.linger is not None:
                p.linger.cancel()
            for w in list(p.windows):
                self.drop(p, w)
        self.pinned.clear()
        while self._spares:
            self.used -= len(self._spares.pop())


class _Reader:
    """One version, pinned by its Azure ETag.

    Each HTTP request costs the service far more than its bytes (Azurite here: 9 ms of its
    CPU for a 256 KiB range, 18 ms for 4 MiB + 1 byte, 35 ms for exactly 4 MiB, which it
    reads twice, 30 ms for 8 MiB), so reads are served from read-ahead windows, shared by
    every reader of the same version in the store (the fan-out client reads one object as
    parallel GETs of adjacent 4 MiB parts, each through its own reader):

    - A read no window covers starts one: ``read_ahead_first`` bytes (at least the read),
      or, if it continues a run of windows that ended just there, as long as that run (up to
      ``read_ahead``).
    - A read that continues a run (its window follows another, or it is not the first read
      of its window) keeps ``read_ahead_depth`` windows downloading after its own, each as
      long as the run so far, up to ``read_ahead``: 1, 1, 2, 4, 8, 8, ... MiB by default,
      the next request in flight while the one before is read. A 4 MiB range read in
      256 KiB pieces thus takes 4 requests (1, 1, 2, 4 MiB), the last one past its end:
      what a range overshoots is at most one window, less than it read; the next part of a
      fan-out GET reads it.
    - Windows stream: a read waits only for its own bytes, not for the whole window.
    - A window is dropped once all its bytes were read, and those bytes are not read ahead
      again until a read asks for them (the part reader before them stops there). Windows
      of a version none of whose readers is open are dropped after ``READ_AHEAD_LINGER``
      seconds.

    Memory: window buffers of all readers of the store together, and up to
    ``SPARE_WINDOWS`` buffers of dropped windows kept for reuse, stay within
    ``read_ahead_memory`` bytes (64 MiB by default): that is the gateway's bound (one store
    per gateway process; a dropped window's buffer is freed as soon as the read or the
    cancelled download still using it lets go). Per open reader: each read starts at most
    one window for itself and ``read_ahead_depth`` after it, each at most ``read_ahead``
    bytes (8 + 8 MiB by default); what a reader leaves unread (past the end of its range)
    waits for the next reader, for ``READ_AHEAD_LINGER`` s after the last reader of the
    version closed, or until memory is needed. When a window does not fit, windows no read
    is using are dropped, least recently used first (a read-ahead drops only those of
    versions nobody has open); failing that, a read downloads exactly its own bytes into
    the caller's buffer, and a read-ahead is not started. Reads of ``read_ahead`` bytes or
    more, and every read with ``read_ahead`` 0, go straight into the caller's buffer.

    Every download carries ``If-Match`` with the version's Azure ETag, so a window holds
    bytes of this version only; bytes already downloaded are served after the blob is
    replaced, and a read that needs a new request then fails with QS_PRECONDITION_FAILED."""

    def __init__(self, readahead: _ReadAhead, pinned: _Pinned) -> None:
        assert pinned.version.info is not None
        self.info: ObjectInfo = pinned.version.info
        self._ra = readahead
        self._pinned: _Pinned | None = pinned

    def _open(self) -> _Pinned:
        if self._pinned is None:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "reader already closed")
        return self._pinned

    async def read_into(self, offset: int, buffer: memoryview) -> int:
        """Up to ``len(buffer)`` bytes at ``offset`` (bytes) of the pinned version into
        ``buffer`` (fewer at a window's end: ask again); 0 at or past the end.
        QS_PRECONDITION_FAILED if the blob was replaced or deleted since
        :meth:`AzureStore.open` and the bytes were not downloaded before."""
        p = self._open()
        ra = self._ra
        want = min(len(buffer), self.info.size - offset)
        if want <= 0:
            return 0
        w = p.find(offset) if ra.largest > want else None
        if w is None and ra.largest > want:
            p.unmark_read(offset)
            run = p.run_ends.pop(offset, 0)
            length = max(want, min(ra.largest, max(ra.first, run)))
            w = ra.open_window(p, offset, length, run, demand=True, least=want)
        if w is None:
            await _download(
                p.blob,
                p.version.azure_etag,
                offset,
                buffer[:want],
                None,
                ra.retries,
                "read an object",
            )
            return want
        ra.touch(p, w)
        if offset > w.start or w.run > w.size:
            ra.ahead(p, w)
        n = min(want, w.end - offset)
        at = offset - w.start
        w.users += 1
        try:
            await w.wait(at + n)
            buffer[:n] = memoryview(w.buf)[at : at + n]
        finally:
            w.users -= 1
        w.served += n
        if w.served >= w.size:
            ra.drop(p, w)
            p.mark_read(w.start, w.end)
        return n

    async def read_checksums(self, first_block: int, count: int) -> bytes:
        """Packed big-endian CRC32C of ``count`` blocks from ``first_block`` (fewer at the
        end of the object)."""
        p = self._open()
        blocks = -(-self.info.size // self.info.block_size)
        count = max(0, min(count, blocks - first_block))
        if count == 0:
            return b""
        if p.version.checksums is not None:
            return p.version.checksums[first_block * 4 : (first_block + count) * 4]
        out = bytearray(count * 4)
        await _download(
            p.blob,
            p.version.azure_etag,
            self.info.size + first_block * 4,
            memoryview(out),
            None,
            self._ra.retries,
            "read checksums",
        )
        return bytes(out)

    async def close(self) -> None:
        """Let go of the version (its windows linger a moment for the next reader).
        Idempotent."""
        if self._pinned is not None:
            self._ra.unpin(self._pinned)
            self._pinned = None


# --- writing ------------------------------------------------------------------------------


class _Writer(BufferedUpload):
    """An upload: blocks staged as they fill, committed (or not) at the end."""

    def __init__(
        self,
        store: AzureStore,
        bucket: str,
        key: str,
        container: str,
        block_size: int,
        content_type: str | None,
        meta: dict[str, str],
    ) -> None:
        super().__init__(bucket, key, block_size, content_type, meta, store.config.stage_block_size)
        self._store = store
        self._container = container
        self._blob = store._blob(container, key)
        self._upload_id = secrets.token_hex(16)
        self._block_ids: list[str] = []
        self._staging: deque[asyncio.Task[None]] = deque()

    def _block_id(self, index: int) -> str:
        # Every block ID of one blob must have the same length (Azure's rule), also across
        # uploads of the same key: 32 hex digits of upload ID and 8 digits of index.
        return base64.b64encode(f"{self._upload_id}{index:08d}".encode("ascii")).decode("ascii")

    async def _send_piece(self, data: bytes) -> None:
        """Stage ``data`` as the upload's next block (each full ``stage_block_size``, and
        the rest with the trailer at commit)."""
        if len(self._block_ids) >= MAX_BLOCKS:
            raise RequestError(ErrorCode.QS_OBJECT_TOO_LARGE, "object has too many Azure blocks")
        while len(self._staging) >= self._store.config.stages_in_flight:
            await self._staging.popleft()
        block_id = self._block_id(len(self._block_ids))
        self._block_ids.append(block_id)

        async def stage() -> None:
            try:
                await self._store._in_container(
                    self._container,
                    lambda: self._blob.stage_block(block_id, io.BytesIO(data), length=len(data)),
                    "stage a block",
                )
            except AzureError as exc:
                raise _service_error(exc, "stage a block") from None

        self._staging.append(asyncio.get_running_loop().create_task(stage()))

    async def _drain(self) -> None:
        while self._staging:
            await self._staging.popleft()

    def _cancel_staging(self) -> None:
        for task in self._staging:
            task.cancel()
        self._staging.clear()

    async def _finish(self) -> None:
        """Stop staging; staged blocks are never committed (Azure discards them)."""
        self._cancel_staging()

    async def _commit(
        self, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        """Verify the body, then publish it atomically if ``condition`` accepts the current
        version (race-free: the publish is conditional on the version checked)."""
        packed, info = self._verified_version(sha256, content_length)
        metadata = _base_metadata(info)
        trailer = place_checksums(metadata, "qs_checksums", packed, METADATA_LIMIT)
        settings = ContentSettings(content_type=self._content_type) if self._content_type else None

        publish: Callable[[dict[str, Any]], Awaitable[object]]
        if not self._block_ids:
            body = bytes(self._pending) + trailer

            def publish(conditions: dict[str, Any]) -> Awaitable[object]:
                return self._store._in_container(
                    self._container,
                    lambda: self._blob.upload_blob(
                        io.BytesIO(body),
                        overwrite=True,
                        length=len(body),
                        metadata=metadata,
                        content_settings=settings,
                        **conditions,
                    ),
                    "store an object",
                )

        else:
            last = bytes(self._pending) + trailer
            if last:
                await self._send_piece(last)
            await self._drain()
            blocks = [BlobBlock(block_id=b) for b in self._block_ids]

            def publish(conditions: dict[str, Any]) -> Awaitable[object]:
                commit: Awaitable[object] = self._blob.commit_block_list(
                    blocks, content_settings=settings, metadata=metadata, **conditions
                )
                return commit

        self._pending = bytearray()

        async def publish_if_accepted() -> ObjectInfo:
            current = await self._store._head(self._bucket, self._container, self._key)
            condition(current.info.etag if current is not None and current.info else None)
            conditions: dict[str, Any] = (
                {"etag": current.azure_etag, "match_condition": MatchConditions.IfNotModified}
                if current is not None
                else {"match_condition": MatchConditions.IfMissing}
            )
            try:
                await publish(conditions)
            except (ResourceModifiedError, ResourceExistsError):
                raise LostRace from None  # another commit came between our check and publish
            except ResourceNotFoundError as exc:
                if _error_code(exc) == "BlobNotFound":
                    raise LostRace from None  # deleted between check and publish
                raise _service_error(exc, "store an object") from None
            except HttpResponseError as exc:
                if _error_code(exc) == "InvalidBlockList":
                    raise RequestError(
                        ErrorCode.QS_UNAVAILABLE,
                        "a concurrent upload of this key was committed first and discarded "
                        "this upload's staged blocks; retry",
                    ) from None
                raise _service_error(exc, "store an object") from None
            except AzureError as exc:
                raise _service_error(exc, "store an object") from None
            return info

        return await retry_lost_races(
            publish_if_accepted, "too many concurrent writes to this key; retry"
        )


# --- the store ----------------------------------------------------------------------------


class AzureStore:
    """Buckets as containers and objects as block blobs of one storage account; see the
    module docstring for the mapping and its guarantees."""

    def __init__(self, config: AzureStoreConfig) -> None:
        """A store over ``config``'s account (no request made yet; :meth:`connect` checks the
        account is reachable). ValueError for a malformed connection string or prefix."""
        if len(config.container_prefix) > 61 or not _PREFIX_RE.fullmatch(config.container_prefix):
            raise ValueError(
                f"Azure container prefix {config.container_prefix!r}: lowercase letters, digits "
                "and single '-', starting with a letter or digit, at most 61 characters"
            )
        if config.stage_block_size < 1 or config.stages_in_flight < 1:
            raise ValueError("stage_block_size and stages_in_flight must be positive")
        if min(config.read_ahead, config.read_ahead_depth, config.read_ahead_memory) < 0:
            raise ValueError("read-ahead sizes must not be negative")
        self.config = config
        retry = ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=config.retries, random_jitter_range=1
        )
        try:
            transport = AioHttpTransport(
                use_env_settings=_proxy_configured(),
                connection_timeout=config.connection_timeout,
                read_timeout=config.read_timeout,
                connection_data_block_size=256 * 1024,
            )
            self._service = BlobServiceClient.from_connection_string(
                config.connection_string,
                api_version=config.api_version,
                retry_policy=retry,
                transport=transport,
                max_single_put_size=max(64 * MIB, 2 * config.stage_block_size),
            )
        except ImportError as exc:  # the SDK's async transport needs aiohttp
            raise ValueError(f"the azure store needs aiohttp: {exc}") from None
        except (ValueError, AzureError) as exc:
            raise ValueError(f"Azure connection string: {exc}") from None
        self._containers: dict[str, ContainerClient] = {}
        self._blobs: dict[tuple[str, str], BlobClient] = {}
        self._readahead = _ReadAhead(config)

    @classmethod
    async def connect(cls, config: AzureStoreConfig) -> AzureStore:
        """A store whose account answered one request; ConnectionError (naming the account
        URL, never the key) if it is unreachable or refuses the credentials."""
        store = cls(config)
        try:
            await store._service.get_account_information()
        except AzureError as exc:
            await store.close()
            status = getattr(exc, "status_code", None)
            reason = (
                f"HTTP {status} {_error_code(exc)}".strip()
                if status
                else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            raise ConnectionError(
                f"Azure Storage at {store.account_url} did not accept a request ({reason})"
            ) from None
        return store

    @property
    def account_url(self) -> str:
        """The blob endpoint of the account (no credentials)."""
        return str(self._service.url).split("?", 1)[0]

    def container_name(self, bucket: str) -> str:
        """The container that holds ``bucket`` (QS_INVALID_KEY if Azure cannot name it)."""
        return container_name(self.config.container_prefix, bucket)

    def _container(self, name: str) -> ContainerClient:
        client = self._containers.get(name)
        if client is None:
            client = self._containers[name] = self._service.get_container_client(name)
        return client

    def _blob(self, container: str, key: str) -> BlobClient:
        """The client of one blob, kept for the next requests about it (making one costs
        about 1 ms of CPU, a third of a properties request)."""
        client = self._blobs.pop((container, key), None)
        if client is None:
            client = self._container(container).get_blob_client(key)
            if len(self._blobs) >= BLOB_CLIENTS:
                del self._blobs[next(iter(self._blobs))]
        self._blobs[(container, key)] = client  # most recently used last
        return client

    async def _in_container(self, container: str, op: Callable[[], Awaitable[T]], what: str) -> T:
        """``op()``, creating the container first if it does not exist yet."""
        try:
            return await op()
        except ResourceNotFoundError as exc:
            if _error_code(exc) != "ContainerNotFound":
                raise
        try:
            await self._container(container).create_container()
        except ResourceExistsError:
            pass  # another gateway created it meanwhile
        except AzureError as exc:
            raise _service_error(exc, "create a container") from None
        return await op()

    async def _head(self, bucket: str, container: str, key: str) -> _Version | None:
        """The blob's current version, or None if there is no blob."""
        try:
            props = await self._blob(container, key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _service_error(exc, "read an object's properties") from None
        return _parse(bucket, key, props)

    async def _current(self, bucket: str, key: str) -> tuple[str, _Version]:
        container = self.container_name(bucket)
        version = await self._head(bucket, container, key)
        if version is None or version.info is None:
            raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
        return container, version

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The current version's metadata (QS_NOT_FOUND if none)."""
        _, version = await self._current(bucket, key)
        assert version.info is not None
        return version.info

    async def open(self, bucket: str, key: str) -> _Reader:
        """The current version, pinned by its ETag (QS_NOT_FOUND if none)."""
        container, version = await self._current(bucket, key)
        pinned = self._readahead.pin(container, key, version, lambda: self._blob(container, key))
        return _Reader(self._readahead, pinned)

    async def create(
        self,
        bucket: str,
        key: str,
        *,
        block_size: int,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> _Writer:
        """Start an upload (QS_INVALID_KEY for a bucket Azure cannot name,
        QS_METADATA_TOO_LARGE if its metadata cannot fit Azure's 8 KiB)."""
        container = self.container_name(bucket)
        check_metadata_room(
            _base_metadata,
            "qs_checksums",
            METADATA_LIMIT,
            "Azure",
            bucket=bucket,
            key=key,
            block_size=block_size,
            content_type=content_type,
            meta=meta or {},
        )
        return _Writer(self, bucket, key, container, block_size, content_type, dict(meta or {}))

    async def delete(self, bucket: str, key: str, condition: Condition) -> ObjectInfo:
        """Remove the current version if ``condition`` accepts it (race-free: the delete is
        conditional on the version checked); return what was removed."""
        container = self.container_name(bucket)
        blob = self._blob(container, key)

        async def delete_if_accepted() -> ObjectInfo:
            version = await self._head(bucket, container, key)
            info = deletable(condition, version.info if version is not None else None)
            assert version is not None
            try:
                await blob.delete_blob(
                    etag=version.azure_etag, match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                raise LostRace from None  # replaced or deleted since the check
            except AzureError as exc:
                raise _service_error(exc, "delete an object") from None
            return info

        return await retry_lost_races(delete_if_accepted, "too many concurrent writes to this key")

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
        marker = (
            decode_token(continuation, _Continuation).marker if continuation is not None else None
        )
        container = self._container(self.container_name(bucket))
        per_page = max(1, min(limit, LIST_MAX))
        try:
            options: dict[str, Any] = {
                "name_starts_with": prefix or None,
                "include": ["metadata"],
                "results_per_page": per_page,
            }
            listing = (
                container.walk_blobs(delimiter=delimiter, **options)
                if delimiter
                else container.list_blobs(**options)
            )
            pager: AsyncPageIterator[BlobProperties | BlobPrefix] = cast(
                Any, listing.by_page(continuation_token=marker)
            )
            entries: list[ObjectInfo] = []
            prefixes: list[str] = []
            try:
                page = await pager.__anext__()
            except StopAsyncIteration:
                return ListPage(entries=[], prefixes=[], next=None)
            async for item in page:
                if isinstance(item, BlobPrefix):
                    prefixes.append(str(item.name))
                    continue
                version = _parse(bucket, str(item.name), item)
                if version.info is not None:
                    entries.append(version.info)
            next_marker = pager.continuation_token
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                return ListPage(entries=[], prefixes=[], next=None)
            raise _service_error(exc, "list objects") from None
        except HttpResponseError as exc:
            if exc.status_code == 400 and marker is not None:
                raise RequestError(ErrorCode.QS_BAD_REQUEST, "stale continuation token") from None
            raise _service_error(exc, "list objects") from None
        except AzureError as exc:
            raise _service_error(exc, "list objects") from None
        entries.sort(key=lambda e: e.key.encode())
        prefixes.sort(key=lambda p: p.encode())
        return ListPage(
            entries=entries,
            prefixes=prefixes,
            next=encode_token(_Continuation(str(next_marker))) if next_marker else None,
        )

    async def close(self) -> None:
        """Stop the read-ahead and close the HTTP connections to the service."""
        self._readahead.close()
        await self._service.close()
