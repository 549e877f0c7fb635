"""An fsspec file system for ``quicstore://`` URLs, so that pandas, pyarrow, Dask, xarray
and anything else that opens files through fsspec reads and writes quicstore objects.

    import fsspec, pandas as pd
    with fsspec.open("quicstore://127.0.0.1:4433/datasets/train/0001.tar", ca_file=CA) as f:
        header = f.read(512)
    df = pd.read_parquet("quicstore://127.0.0.1:4433/tables/t.parquet",
                         storage_options={"ca_file": CA})

    fs = fsspec.filesystem("quicstore", url="quicstore://a:4433,b:4433", token=TOKEN)
    fs.ls("datasets/train")          # paths are BUCKET/KEY; directories are key prefixes

Registered under the ``fsspec.specs`` entry point (install the ``fsspec`` extra). The
gateway part of a URL (``host:port``, or ``a:1,b:2`` for several gateways) picks the
gateways; paths inside the file system are ``bucket/key``. (An IPv6 gateway goes in the
``url`` option: fsspec reads ``::`` in a URL as chaining.) Every read goes through the
async client's fan-out GET, so each block is checked against its CRC32C as it lands: a whole
object with one GET (``verify_sha256=True`` also checks its SHA-256), a range with
``offset``/``length``. Writes stream into an atomic PUT, hashed as they go: the object
appears only when the file is closed, whole and verified; a ``with`` block that raises
publishes nothing.

Event loop: one place. This is an :class:`fsspec.asyn.AsyncFileSystem`; its blocking methods
run the async ones on fsspec's I/O loop thread (or, with ``asynchronous=True``, on the
caller's loop), where the :class:`~quicstore.client.client.Client` and its connections
live. Not fork-safe (as fsspec's own async file systems): after a fork, fsspec makes new
instances, with new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import os
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.spec import AbstractBufferedFile
from fsspec.utils import stringify_path

from .client.client import Client, ClientConfig, parse_endpoints
from .errors import AuthError, NotFound, PreconditionFailed, RangeNotSatisfiable
from .store.base import ObjectInfo

MIB = 1024 * 1024
PROTOCOL = "quicstore"
FSSPEC_OPTIONS = frozenset(
    {"asynchronous", "loop", "batch_size", "use_listings_cache", "listings_expiry_time",
     "max_paths"}
)  # fmt: skip
"""Options fsspec itself takes; anything else unknown is refused (a typo is not ignored)."""
WRITE_QUEUE = 2
"""Write blocks queued for the PUT stream before ``write`` waits (memory: this many
``block_size`` buffers, plus the one being filled)."""
CLOSE_TIMEOUT = 5.0
"""Seconds to close the gateway connections when the file system is collected."""


def _gateway_netloc(url: str | Sequence[str]) -> str:
    """``host:port[,host:port...]`` for URLs built by :meth:`unstrip_protocol`."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parse_endpoints(url))


def _split(path: str) -> tuple[str, str]:
    """``bucket/key`` -> (bucket, key); key may be empty (the bucket itself)."""
    bucket, _, key = path.partition("/")
    return bucket, key


def _file_entry(name: str, info: ObjectInfo) -> dict[str, Any]:
    """fsspec's info dict for an object: name, size (bytes), type, plus ETag, mtime (UTC)."""
    entry: dict[str, Any] = {
        "name": name,
        "size": info.size,
        "type": "file",
        "etag": info.etag,
        "mtime": datetime.datetime.fromtimestamp(info.mtime_ns / 1e9, datetime.UTC),
    }
    if info.sha256:
        entry["sha256"] = info.sha256.hex()
    if info.content_type:
        entry["content_type"] = info.content_type
    return entry


def _dir_entry(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _translate(exc: BaseException, path: str) -> BaseException:
    """The built-in exception fsspec callers expect for a quicstore error (else ``exc``)."""
    if isinstance(exc, NotFound):
        return FileNotFoundError(errno.ENOENT, exc.message, path)
    if isinstance(exc, AuthError):
        return PermissionError(errno.EACCES, f"{exc.message} [{exc.code_name}]", path)
    return exc


class QuicstoreFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """``quicstore://host:port/bucket/key`` as an fsspec file system (see the module doc).
    Directories are key prefixes up to a ``/``; they exist while objects are under them, and
    ``mkdir`` does nothing. There is no bucket listing: ``ls`` needs at least a bucket."""

    protocol = (PROTOCOL,)
    root_marker = ""
    cachable = True

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        token: str | None = None,
        insecure: bool = False,
        pin: str | None = None,
        server_name: str | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        verify_sha256: bool = False,
        block_size: int = 8 * MIB,
        **kwargs: Any,
    ) -> None:
        """``url``: the gateway(s), ``quicstore://host:port`` (``a:1,b:2`` or a list for
        several; taken from the path when opened by URL). Storage options map to
        :class:`~quicstore.client.client.ClientConfig`: ``ca_file`` (PEM the certificate
        must chain to), ``token`` (default ``$QUICSTORE_TOKEN``), ``insecure`` (no
        verification), ``pin`` (SHA-256 of a self-signed certificate, hex), ``server_name``,
        ``client_cert``/``client_key`` (mutual TLS), ``verify_sha256`` (check whole-object
        reads against the SHA-256 too). ``block_size``: bytes per read of an open file and per
        streamed write block. Raises ValueError without a gateway, TypeError for an unknown
        option."""
        unknown = sorted(set(kwargs) - FSSPEC_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown quicstore storage option(s) {', '.join(unknown)}; known: url, "
                "ca_file, token, insecure, pin, server_name, client_cert, client_key, "
                "verify_sha256, block_size"
            )
        if not url:
            raise ValueError(
                "no quicstore gateway: open a quicstore://HOST:PORT/BUCKET/KEY URL or pass "
                "url='quicstore://HOST:PORT'"
            )
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, not {block_size}")
        super().__init__(**kwargs)
        self.url = url
        self.netloc = _gateway_netloc(url)
        self.blocksize = block_size
        self.config = ClientConfig(
            token=token,
            ca_file=Path(ca_file) if ca_file is not None else None,
            pin=pin,
            insecure=bool(insecure),
            server_name=server_name,
            client_cert=Path(client_cert) if client_cert is not None else None,
            client_key=Path(client_key) if client_key is not None else None,
            verify_sha256=bool(verify_sha256),
        )
        self.client = Client(url, self.config)
        """The async client; use only on the file system's loop."""
        if not self.asynchronous:
            weakref.finalize(self, _close_client, self.client, self.loop)

    # -- paths

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``quicstore://gateway/bucket/key`` (or ``bucket/key``) -> ``bucket/key``."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :].partition("/")[2]
        return str(path).strip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        """The gateway(s) named in a URL, as the ``url`` option."""
        if path.startswith(f"{PROTOCOL}://"):
            netloc = path[len(PROTOCOL) + 3 :].partition("/")[0]
            if netloc:
                return {"url": f"{PROTOCOL}://{netloc}"}
        return {}

    def unstrip_protocol(self, name: str) -> str:
        """``bucket/key`` -> ``quicstore://gateway/bucket/key``."""
        if name.startswith(f"{PROTOCOL}://"):
            return name
        return f"{PROTOCOL}://{self.netloc}/{name}"

    # -- metadata

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not bucket:
            return _dir_entry("")
        if key:
            try:
                return _file_entry(path, await self.client.stat(bucket, key))
            except NotFound:
                pass
            except AuthError as exc:
                raise _translate(exc, path) from exc
        if await self._has_children(bucket, key):
            return _dir_entry(path)
        raise FileNotFoundError(errno.ENOENT, "no such object or directory", path)

    async def _has_children(self, bucket: str, key: str) -> bool:
        prefix = f"{key}/" if key else ""
        try:
            async for page in self.client.list(bucket, prefix=prefix, delimiter="/", limit=1):
                return bool(page.entries or page.prefixes)
        except AuthError as exc:
            raise _translate(exc, f"{bucket}/{key}") from exc
        return False

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not bucket:
            raise ValueError("quicstore has no bucket listing: ls needs a bucket")
        prefix = f"{key}/" if key else ""
        entries: list[dict[str, Any]] = []
        try:
            async for page in self.client.list(bucket, prefix=prefix, delimiter="/"):
                entries += [_dir_entry(f"{bucket}/{p.rstrip('/')}") for p in page.prefixes]
                entries += [_file_entry(f"{bucket}/{e.key}", e) for e in page.entries]
        except AuthError as exc:
            raise _translate(exc, path) from exc
        if not entries:
            info = await self._info(path)  # a file lists as itself; else FileNotFoundError
            if info["type"] == "file":
                entries = [info]
        entries.sort(key=lambda e: str(e["name"]))
        return entries if detail else [e["name"] for e in entries]

    async def _find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        """Every object under ``path``, from one flat listing (the walk of the base class
        only with ``maxdepth`` or ``withdirs``)."""
        if maxdepth is not None or withdirs:
            return await super()._find(path, maxdepth=maxdepth, withdirs=withdirs, **kwargs)
        detail = kwargs.pop("detail", False)
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not bucket:
            raise ValueError("quicstore has no bucket listing: find needs a bucket")
        found: dict[str, dict[str, Any]] = {}
        try:
            for info in await self.client.list_all(bucket, prefix=f"{key}/" if key else ""):
                found[f"{bucket}/{info.key}"] = _file_entry(f"{bucket}/{info.key}", info)
            if not found and key:
                with contextlib.suppress(NotFound):
                    found[path] = _file_entry(path, await self.client.stat(bucket, key))
        except AuthError as exc:
            raise _translate(exc, path) from exc
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    # -- reads

    async def _cat_file(
        self,
        path: str,
        start: int | None = None,
        end: int | None = None,
        etag: str | None = None,
        **kwargs: Any,
    ) -> bytes:
        """Bytes ``[start, end)`` of an object (negative: from the end; None: its start or
        end), every block verified. ``etag``: read only that version (ObjectChanged/
        PreconditionFailed if it was replaced)."""
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "not an object", path)
        try:
            if start is not None and start < 0 and end is None:
                data = await self.client.get(bucket, key, suffix=-start, if_match=etag)
                return bytes(data)
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = (await self.client.stat(bucket, key)).size
                start = max(0, size + start) if start is not None and start < 0 else start
                end = max(0, size + end) if end is not None and end < 0 else end
            offset = start or 0
            if end is not None and end <= offset:
                await self.client.stat(bucket, key)  # still FileNotFoundError if missing
                return b""
            length = None if end is None else end - offset
            if offset == 0 and length is None:
                return bytes(await self.client.get(bucket, key, if_match=etag))
            data = await self.client.get(bucket, key, offset=offset, length=length, if_match=etag)
            return bytes(data)
        except RangeNotSatisfiable:
            return b""  # at or past the end, as reading a file there gives nothing
        except (NotFound, AuthError) as exc:
            raise _translate(exc, path) from exc

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        """Download to ``lpath`` (positional writes; the file appears only when whole)."""
        rpath = self._strip_protocol(rpath)
        bucket, key = _split(rpath)
        if os.path.isdir(lpath):
            return  # a directory in the listing: fsspec made the local folder
        try:
            await self.client.get_file(bucket, key, lpath)
        except (NotFound, AuthError) as exc:
            raise _translate(exc, rpath) from exc

    # -- writes

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """PUT ``value`` (hashed first, verified by the gateway). ``mode="create"``: fail
        with FileExistsError if the object exists."""
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "not an object path", path)
        await self._put_object(path, bucket, key, value, mode)

    async def _put_file(
        self, lpath: str, rpath: str, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Upload a local file (hashed first; re-sent if a connection breaks)."""
        if os.path.isdir(lpath):
            return  # directories are implicit
        rpath = self._strip_protocol(rpath)
        bucket, key = _split(rpath)
        await self._put_object(rpath, bucket, key, lpath, mode)

    async def _put_object(
        self, path: str, bucket: str, key: str, data: bytes | str, mode: str
    ) -> None:
        """PUT ``data`` (bytes, or a local file's path) as ``path`` (``bucket``/``key``);
        ``mode="create"``: FileExistsError if the object exists. Errors as fsspec's."""
        try:
            await self.client.put(
                bucket, key, data, if_none_match="*" if mode == "create" else None
            )
        except PreconditionFailed as exc:
            raise FileExistsError(errno.EEXIST, "object exists", path) from exc
        except AuthError as exc:
            raise _translate(exc, path) from exc

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy through this client (no server-side copy): read verified, write verified."""
        await self._pipe_file(path2, await self._cat_file(path1))

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        bucket, key = _split(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "not an object path", path)
        try:
            await self.client.delete(bucket, key)
        except (NotFound, AuthError) as exc:
            raise _translate(exc, path) from exc

    async def _rm(
        self,
        path: str | list[str],
        recursive: bool = False,
        maxdepth: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Delete objects; with ``recursive``, everything under a directory (directories
        themselves are implicit and vanish with their last object)."""
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        missing: list[tuple[str, BaseException]] = []

        async def remove(p: str) -> None:
            try:
                await self._rm_file(p)
            except (FileNotFoundError, IsADirectoryError) as exc:
                missing.append((p, exc))

        size = batch_size or self.batch_size or 64
        for first in range(0, len(paths), size):
            await asyncio.gather(*(remove(p) for p in paths[first : first + size]))
        # Not objects: directories (whose objects went with them), or really missing.
        for p, exc in missing:
            if any(other.startswith(f"{p}/") for other in paths):
                continue  # a directory expanded with its contents
            if not await self._isdir(p):
                raise exc
            if not recursive:
                raise IsADirectoryError(errno.EISDIR, "a directory: use recursive=True", p)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: directories are key prefixes."""

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: directories are key prefixes."""

    # -- files

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AbstractBufferedFile:
        """A file object: ``rb`` (ranged, verified reads of the version opened), ``wb`` or
        ``xb`` (a streamed atomic PUT; ``xb`` fails if the object exists)."""
        path = self._strip_protocol(path)
        if mode not in ("rb", "wb", "xb"):
            raise NotImplementedError(
                f"mode {mode!r}: quicstore objects are read (rb) or replaced whole (wb, xb)"
            )
        if mode == "rb":
            info = self.info(path)
            if info["type"] != "file":
                raise IsADirectoryError(errno.EISDIR, "not an object", path)
            return QuicstoreFile(
                self,
                path,
                mode,
                block_size=block_size or self.blocksize,
                cache_options=cache_options,
                info=info,
                **kwargs,
            )
        if not _split(path)[1]:
            raise IsADirectoryError(errno.EISDIR, "not an object path", path)
        return QuicstoreWriteFile(self, path, mode, block_size=block_size or self.blocksize)

    # -- connections

    async def _close(self) -> None:
        await self.client.close()

    def close(self) -> None:
        """Close the gateway connections now (the next call opens new ones)."""
        if self.asynchronous:
            raise RuntimeError("an asynchronous file system: await fs._close() instead")
        sync(self.loop, self._close)


def _close_client(client: Client, loop: asyncio.AbstractEventLoop) -> None:
    """Close a collected file system's connections on its loop (bounded wait)."""
    if loop.is_closed() or not loop.is_running():
        return
    with contextlib.suppress(RuntimeError):
        if asyncio.get_running_loop() is loop:
            loop.create_task(client.close())
            return
    future = asyncio.run_coroutine_threadsafe(client.close(), loop)
    with contextlib.suppress(Exception):
        future.result(timeout=CLOSE_TIMEOUT)


class QuicstoreFile(AbstractBufferedFile):  # type: ignore[misc]
    """An object opened for reading: ranges fetched by block (``block_size`` bytes) through
    the fan-out GET, every block verified, all from the version opened (a replaced object
    fails the read with PreconditionFailed instead of mixing versions)."""

    def __init__(
        self, fs: QuicstoreFileSystem, path: str, mode: str, *, info: dict[str, Any], **kw: Any
    ) -> None:
        self.details = info
        super().__init__(fs, path, mode, size=info["size"], **kw)
        self.etag = str(info["etag"])

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end, etag=self.etag)  # type: ignore[no-any-return]


class QuicstoreWriteFile(AbstractBufferedFile):  # type: ignore[misc]
    """An object being written: blocks stream into one PUT as they fill (at most
    :data:`WRITE_QUEUE` waiting), hashed as they go; ``close`` finishes the PUT and the
    object appears whole. A file closed after an exception in its ``with`` block, or
    :meth:`discard`-ed, publishes nothing. A file that fits in one block is sent as one
    hashed PUT (retried on a new connection if one breaks)."""

    def __init__(self, fs: QuicstoreFileSystem, path: str, mode: str, **kw: Any) -> None:
        super().__init__(fs, path, mode, **kw)
        self.bucket, self.key = _split(path)
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._task: asyncio.Task[ObjectInfo] | None = None
        self.info_written: ObjectInfo | None = None
        """The object's metadata once closed."""

    def _initiate_upload(self) -> None:
        """Nothing yet: a file that fits in one block is sent whole at close."""

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        fs: QuicstoreFileSystem = self.fs
        if final and self._task is None:
            if self.mode == "xb":
                fs.pipe_file(self.path, data, mode="create")
            else:
                fs.pipe_file(self.path, data)
            return True
        if self._task is None:
            sync(fs.loop, self._start)
        if data:
            sync(fs.loop, self._feed, data)
        if final:
            sync(fs.loop, self._feed, None)
            self.info_written = sync(fs.loop, self._finish)
        return True

    async def _start(self) -> None:
        self._queue = asyncio.Queue(WRITE_QUEUE)
        queue = self._queue

        async def chunks() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not None:
                yield item

        self._task = asyncio.get_running_loop().create_task(
            self.fs.client.put(
                self.bucket,
                self.key,
                chunks(),
                if_none_match="*" if self.mode == "xb" else None,
            )
        )

    async def _feed(self, item: bytes | None) -> None:
        """Queue a block (None: the end), or raise the PUT's failure if it ended early."""
        assert self._queue is not None and self._task is not None
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await self._finish()
            raise OSError(errno.EIO, "the upload ended before all data was sent", self.path)

    async def _finish(self) -> ObjectInfo:
        assert self._task is not None
        try:
            return await self._task
        except PreconditionFailed as exc:
            raise FileExistsError(errno.EEXIST, "object exists", self.path) from exc
        except AuthError as exc:
            raise _translate(exc, self.path) from exc

    async def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def discard(self) -> None:
        """Abandon the write: the PUT is cancelled and no version is published."""
        if self._task is not None:
            sync(self.fs.loop, self._cancel)
        self.closed = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None and not self.closed:
            self.discard()
        else:
            self.close()
