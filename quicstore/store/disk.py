"""The disk-backed store: object bytes in files, metadata in a SQLite index.

Layout under ``<root>/store``::

    index.sqlite3          key -> version metadata (WAL, synchronous=FULL)
    index.generation       a counter every index change bumps (8 bytes)
    data/<bucket>/<xx>/<id>.obj   object bytes of one version (id: 128 random bits)
    data/<bucket>/<xx>/<id>.crc   its block CRC32Cs, packed big-endian (4 bytes per block)
    tmp/                   uploads in progress

Keys never become file names: they live only in the index, so no key can name a file
outside the root. A PUT streams into ``tmp/``; at commit the files are fsynced, renamed into
``data/`` (and the folder fsynced), then one SQLite transaction publishes the version (after
re-checking the caller's condition) and the previous version's files are unlinked. A crash
at any point leaves the key absent or at its previous version; at start-up ``tmp/`` is
emptied and files no version refers to are removed. Readers hold open file descriptors, so a
version being read stays readable while it is replaced or deleted.

Blocking work runs on thread pools: one thread owns the SQLite connection that writes (so
index changes are serialised), a pool of ``io_threads`` does file I/O. Two kinds of work run
inline on the event loop because a thread hand-off costs more than they do (about 150-200 us
against 10-20 us): reads of page-cached data (``RWF_NOWAIT``, which the kernel refuses rather
than wait on the disk; on tmpfs and ramfs, which refuse that flag and never wait on a device,
every read) and the key lookups of ``stat`` and ``open`` on a second, query-only
connection that never waits for a lock (WAL readers do not block on the writer; if SQLite
says busy, the lookup goes to the index thread instead). Rows looked up are kept and reused
while ``index.generation`` is unchanged: one 8-byte read instead of a query (a SQLite read
transaction takes file locks each time). Every process that changes the index bumps it
after the commit and before the change is acknowledged, under a lock on that file.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import secrets
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..fsinfo import MEMORY_FILE_SYSTEMS, file_system_type
from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.frames import Buffer
from ..proto.integrity import pack_checksums
from .base import (
    Condition,
    ListPage,
    ObjectInfo,
    VerifyingDigester,
    after_key,
    decode_continuation,
    encode_continuation,
    roll_up,
    successor,
)

log = logging.getLogger("quicstore.store")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    content_type TEXT,
    meta BLOB,
    data_id TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID
"""
_COLUMNS = "key, size, etag, mtime_ns, block_size, sha256, content_type, meta, data_id"
_META_ENCODER = msgspec.msgpack.Encoder()
_META_DECODER = msgspec.msgpack.Decoder(dict[str, str])


def _os_error(exc: OSError, what: str) -> RequestError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return RequestError(ErrorCode.QS_INSUFFICIENT_STORAGE, f"no space left to {what}")
    return RequestError(ErrorCode.QS_INTERNAL_ERROR, f"storage error while trying to {what}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
"""preadv2 flag: fail with EAGAIN rather than block on the disk (Linux 4.14+)."""


class _Reader:
    """An open version: file descriptors pinned at open time."""

    def __init__(self, store: DiskStore, info: ObjectInfo, obj_fd: int, crc_fd: int) -> None:
        self.info = info
        self._store = store
        self._obj_fd = obj_fd
        self._crc_fd = crc_fd

    async def read_into(self, offset: int, buffer: memoryview) -> int:
        if self._store.nowait_reads:
            # Cached data is copied here, inline: a thread hand-off costs more than the
            # copy. RWF_NOWAIT makes the kernel refuse (EAGAIN) instead of waiting on disk,
            # and only then does the read go to the I/O threads.
            try:
                got = os.preadv(self._obj_fd, [buffer], offset, _RWF_NOWAIT)
            except BlockingIOError:
                got = 0
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise _os_error(exc, "read an object") from None
                self._store.nowait_reads = False  # this file system cannot; stop trying
                got = 0
            if got > 0:
                return got  # possibly short: the caller asks again for the rest
        elif self._store.memory_backed:
            return self._read_blocking(offset, buffer)
        return await self._store._io(lambda: self._read_blocking(offset, buffer))

    def _read_blocking(self, offset: int, buffer: memoryview) -> int:
        """A plain positional read of the object (may wait on the device)."""
        try:
            return os.preadv(self._obj_fd, [buffer], offset)
        except OSError as exc:
            raise _os_error(exc, "read an object") from None

    async def read_checksums(self, first_block: int, count: int) -> bytes:
        if self._store.nowait_reads:
            packed = bytearray(count * 4)
            try:
                got = os.preadv(self._crc_fd, [packed], first_block * 4, _RWF_NOWAIT)
            except BlockingIOError:
                got = -1
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise _os_error(exc, "read checksums") from None
                self._store.nowait_reads = False
                got = -1
            if got == len(packed):
                return bytes(packed)
        elif self._store.memory_backed:
            return self._read_checksums_blocking(first_block, count)
        return await self._store._io(lambda: self._read_checksums_blocking(first_block, count))

    def _read_checksums_blocking(self, first_block: int, count: int) -> bytes:
        """A plain positional read of ``count`` block checksums (may wait on the device)."""
        try:
            return os.pread(self._crc_fd, count * 4, first_block * 4)
        except OSError as exc:
            raise _os_error(exc, "read checksums") from None

    async def close(self) -> None:
        for fd in (self._obj_fd, self._crc_fd):
            if fd >= 0:
                os.close(fd)
        self._obj_fd = self._crc_fd = -1


class _Writer:
    """An upload streaming into ``tmp/``."""

    def __init__(
        self,
        store: DiskStore,
        bucket: str,
        key: str,
        block_size: int,
        content_type: str | None,
        meta: dict[str, str] | None,
        fd: int,
        data_id: str,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._meta = meta or {}
        self._fd = fd
        self._id = data_id
        self._digest = VerifyingDigester(block_size)
        self._size = 0
        self._finished = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunks: Sequence[Buffer]) -> None:
        def write() -> None:
            for chunk in chunks:
                self._digest.update(chunk)
            views = [memoryview(c) for c in chunks]
            try:
                while views:
                    written = os.writev(self._fd, views)
                    while views and written >= len(views[0]):
                        written -= len(views[0])
                        views.pop(0)
                    if views and written:
                        views[0] = views[0][written:]
            except OSError as exc:
                raise _os_error(exc, "store the upload") from None

        size = sum(len(c) for c in chunks)
        await self._store._io(write)
        self._size += size

    async def expect_checksums(self, first_block: int, checksums: Sequence[int]) -> None:
        await self._store._io(lambda: self._digest.expect(first_block, checksums))

    async def commit(
        self, *, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        if self._finished:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "upload already finished")
        self._finished = True
        store = self._store
        try:
            checksums, digest, etag = await store._io(
                lambda: self._digest.finish(sha256=sha256, content_length=content_length)
            )
            obj_path, crc_path = await store._io(lambda: self._publish_files(checksums))
        except BaseException:
            await store._io(self._discard)
            raise
        info = ObjectInfo(
            bucket=self._bucket,
            key=self._key,
            size=self._size,
            etag=etag,
            mtime_ns=time.time_ns(),
            block_size=self._digest.digester.block_size,
            sha256=digest,
            content_type=self._content_type,
            meta=dict(self._meta),
        )
        try:
            old_id = await store._index(lambda: store._index_commit(info, self._id, condition))
        except BaseException:
            await store._io(lambda: _unlink_all(obj_path, crc_path))
            raise
        if old_id is not None:
            await store._io(lambda: store._remove_version(self._bucket, old_id))
        return info

    def _publish_files(self, checksums: list[int]) -> tuple[Path, Path]:
        """fsync the body and its checksums and rename them into ``data/`` (I/O thread)."""
        store = self._store
        tmp_crc = store.tmp_dir / f"{self._id}.crc.part"
        obj_path, crc_path = store._version_paths(self._bucket, self._id)
        try:
            if store.durable:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            crc_fd = os.open(tmp_crc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(crc_fd, pack_checksums(checksums))
                if store.durable:
                    os.fsync(crc_fd)
            finally:
                os.close(crc_fd)
            created = not obj_path.parent.exists()
            obj_path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp_crc, crc_path)
            os.rename(store.tmp_dir / f"{self._id}.part", obj_path)
            if store.durable:
                _fsync_dir(obj_path.parent)
                if created:
                    _fsync_dir(obj_path.parent.parent)
                    _fsync_dir(obj_path.parent.parent.parent)
        except OSError as exc:
            _unlink_all(tmp_crc, crc_path, obj_path)
            raise _os_error(exc, "store the upload") from None
        return obj_path, crc_path

    def _discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _unlink_all(
            self._store.tmp_dir / f"{self._id}.part", self._store.tmp_dir / f"{self._id}.crc.part"
        )

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._store._io(self._discard)


def _unlink_all(*paths: Path) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - nothing more we can do
            log.warning("could not remove %s: %s", path, exc)


ROW_CACHE_ENTRIES = 8192
"""Index rows a store keeps for lookups (each valid while the index generation holds)."""

_GENERATION = struct.Struct("=Q")


class IndexGeneration:
    """A counter in a small file next to the index, shared by every process using the store:
    bumped after each index change, read (one ``pread``, no lock) to tell whether rows
    looked up before are still current."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def read(self) -> int:
        """The current value (0 for a new file)."""
        data = os.pread(self._fd, _GENERATION.size, 0)
        return _GENERATION.unpack(data)[0] if len(data) == _GENERATION.size else 0

    def bump(self) -> None:
        """Change the value (under an exclusive lock: no bump of another process is lost)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            os.pwrite(self._fd, _GENERATION.pack((self.read() + 1) % (1 << 64)), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DiskStore:
    """A durable store under one root folder; see the module docstring for its layout."""

    def __init__(self, root: Path, *, io_threads: int = 8, durable: bool = True) -> None:
        """Use :meth:`open_at`, which also recovers from a crash. ``durable``: fsync files,
        folders and the index before a PUT is acknowledged (turn off only for benchmarks
        of the transport)."""
        self.root = Path(root) / "store"
        self.data_dir = self.root / "data"
        self._data_prefix = os.path.join(self.data_dir, "")
        self.tmp_dir = self.root / "tmp"
        self.durable = durable
        self.memory_backed = file_system_type(self.root) in MEMORY_FILE_SYSTEMS
        """On tmpfs or ramfs: every read is done inline (those refuse RWF_NOWAIT, which
        would otherwise send every read to the I/O threads)."""
        self.nowait_reads = bool(_RWF_NOWAIT) and not self.memory_backed
        """Try reads from the page cache inline first (RWF_NOWAIT); cleared where the file
        system does not support it."""
        self._index_pool = ThreadPoolExecutor(1, thread_name_prefix="quicstore-index")
        self._io_pool = ThreadPoolExecutor(io_threads, thread_name_prefix="quicstore-io")
        self._db: sqlite3.Connection | None = None
        self._lookup_db: sqlite3.Connection | None = None
        self._generation: IndexGeneration | None = None
        self._rows: dict[tuple[str, str], tuple[int, Sequence[Any] | None, ObjectInfo | None]] = {}
        """(bucket, key) -> (index generation, row or None, its ObjectInfo) of lookups."""
        self.inline_lookups = True
        """Answer ``stat``/``open`` lookups on the event loop's thread (see the module
        docstring); turned off after a lookup finds SQLite busy or broken."""
        self.recovered_temporaries = 0
        """Temporary files removed at start-up (interrupted uploads)."""
        self.recovered_orphans = 0
        """Data files removed at start-up because no version referred to them."""

    @classmethod
    async def open_at(
        cls, root: Path, *, io_threads: int = 8, durable: bool = True, recover: bool = True
    ) -> DiskStore:
        """Open (creating if needed) the store under ``root`` and clean up after a crash.
        ``recover=False`` when another process shares the store (gateway workers): its
        uploads in progress must not be taken for a crash's leftovers."""
        store = cls(root, io_threads=io_threads, durable=durable)
        await store._index(store._open_index)
        if recover:
            await store._recover()
        return store

    # -- thread plumbing

    async def _io(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn)

    async def _index(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._index_pool, fn)

    def _open_index(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.root / "index.sqlite3", isolation_level=None)
        db.execute("PRAGMA busy_timeout=10000")  # other gateway workers may hold the lock
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'OFF'}")
        db.execute(_SCHEMA)
        self._db = db
        self._generation = IndexGeneration(self.root / "index.generation")

    def _lookup(self, bucket: str, key: str) -> Sequence[Any] | None:
        """The key's row from the query-only connection, on the caller's thread; raises
        sqlite3.Error when SQLite would have to wait (the caller then asks the index
        thread)."""
        db = self._lookup_db
        if db is None:
            db = sqlite3.connect(
                self.root / "index.sqlite3", isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA query_only=1")
            self._lookup_db = db
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        ).fetchall()  # all: no statement left open to pin an old snapshot
        return rows[0] if rows else None

    def _lookup_inline(
        self, bucket: str, key: str
    ) -> tuple[Sequence[Any] | None, ObjectInfo | None] | None:
        """``(row, info)`` looked up inline (None, None: no such key), reused from earlier
        lookups while the index generation is unchanged; None when the index thread must
        answer."""
        if not self.inline_lookups or self._db is None or self._generation is None:
            return None
        generation = self._generation.read()
        cached = self._rows.get((bucket, key))
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        try:
            row = self._lookup(bucket, key)
        except sqlite3.OperationalError as exc:
            log.debug("inline index lookup refused (%s); using the index thread", exc)
            return None
        except sqlite3.Error as exc:
            log.warning("inline index lookups off: %s", exc)
            self.inline_lookups = False
            return None
        info = None if row is None else self._row_info(bucket, row)
        if len(self._rows) >= ROW_CACHE_ENTRIES:
            del self._rows[next(iter(self._rows))]
        self._rows[(bucket, key)] = (generation, row, info)
        return row, info

    def _index_changed(self) -> None:
        """After a commit that changed the index (on the index thread, before the change is
        acknowledged): lookups cached by every process sharing the store are stale."""
        if self._generation is None:
            return
        try:
            self._generation.bump()
        except OSError as exc:  # pragma: no cover - an 8-byte write to an open file
            log.error("index generation not bumped (%s): cached lookups off", exc)
            self.inline_lookups = False

    @property
    def db(self) -> sqlite3.Connection:
        """The index connection (only on the index thread)."""
        assert self._db is not None, "store not open"
        return self._db

    def _version_base(self, bucket: str, data_id: str) -> str:
        """A version's files without their suffix (.obj, .crc), as a string: pathlib's joins
        cost more than the two opens on the per-GET path."""
        return f"{self._data_prefix}{bucket}/{data_id[:2]}/{data_id}"

    def _version_paths(self, bucket: str, data_id: str) -> tuple[Path, Path]:
        base = self._version_base(bucket, data_id)
        return Path(base + ".obj"), Path(base + ".crc")

    def _remove_version(self, bucket: str, data_id: str) -> None:
        _unlink_all(*self._version_paths(bucket, data_id))

    async def _recover(self) -> None:
        referenced = await self._index(
            lambda: {row[0] for row in self.db.execute("SELECT data_id FROM objects")}
        )

        def sweep() -> tuple[int, int]:
            temporaries = orphans = 0
            for entry in os.scandir(self.tmp_dir):
                _unlink_all(Path(entry.path))
                temporaries += 1
            for path in self.data_dir.glob("*/*/*"):
                if path.name.split(".")[0] not in referenced:
                    _unlink_all(path)
                    orphans += 1
            return temporaries, orphans

        self.recovered_temporaries, self.recovered_orphans = await self._io(sweep)
        if self.recovered_temporaries or self.recovered_orphans:
            log.info(
                "recovered: removed %d temporary and %d orphaned files",
                self.recovered_temporaries,
                self.recovered_orphans,
            )

    # -- index operations (index thread)

    def _row_info(self, bucket: str, row: Sequence[Any]) -> ObjectInfo:
        key, size, etag, mtime_ns, block_size, sha256, content_type, meta, _ = row
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            etag=etag,
            mtime_ns=mtime_ns,
            block_size=block_size,
            sha256=bytes(sha256),
            content_type=content_type,
            meta=_META_DECODER.decode(meta) if meta else {},
        )

    def _select(self, bucket: str, key: str) -> Sequence[Any] | None:
        cursor = self.db.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        )
        row: Sequence[Any] | None = cursor.fetchone()
        return row

    def _index_commit(self, info: ObjectInfo, data_id: str, condition: Condition) -> str | None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = self._select(info.bucket, info.key)
            condition(row[2] if row else None)
            db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.bucket,
                    info.key,
                    info.size,
                    info.etag,
                    info.mtime_ns,
                    info.block_size,
                    info.sha256,
                    info.content_type,
                    _META_ENCODER.encode(info.meta) if info.meta else None,
                    data_id,
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._index_changed()
        return str(row[8]) if row else None

    # -- the Store interface

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        found = self._lookup_inline(bucket, key)
        if found is not None:
            if found[1] is None:
                raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
            return found[1]
        row = await self._index(lambda: self._select(bucket, key))
        if row is None:
            raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
        return self._row_info(bucket, row)

    async def open(self, bucket: str, key: str) -> _Reader:
        # Inline first: a commit (this process's or another worker's) may replace the version
        # and unlink its files between the lookup and the open; then the lookup is repeated.
        for _ in range(3):
            found = self._lookup_inline(bucket, key)
            if found is None:
                break
            row, info = found
            if row is None:
                raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
            try:
                return self._open_row(bucket, row, info)
            except FileNotFoundError:
                self._rows.pop((bucket, key), None)
                continue
            except OSError as exc:
                raise _os_error(exc, "open an object") from None

        def open_version() -> _Reader:
            row = self._select(bucket, key)
            if row is None:
                raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
            try:
                return self._open_row(bucket, row)
            except OSError as exc:
                raise _os_error(exc, "open an object") from None

        # On the index thread no commit of this process can unlink the files in between.
        return await self._index(open_version)

    def _open_row(self, bucket: str, row: Sequence[Any], info: ObjectInfo | None = None) -> _Reader:
        """Open the version ``row`` names (``info``: its ObjectInfo, if made already); raises
        OSError, e.g. FileNotFoundError."""
        base = self._version_base(bucket, row[8])
        obj_path, crc_path = base + ".obj", base + ".crc"
        obj_fd = os.open(obj_path, os.O_RDONLY)
        try:
            crc_fd = os.open(crc_path, os.O_RDONLY)
        except OSError:
            os.close(obj_fd)
            raise
        return _Reader(self, info or self._row_info(bucket, row), obj_fd, crc_fd)

    async def create(
        self,
        bucket: str,
        key: str,
        *,
        block_size: int,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> _Writer:
        data_id = secrets.token_hex(16)

        def create_temp() -> int:
            try:
                return os.open(
                    self.tmp_dir / f"{data_id}.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
                )
            except OSError as exc:
                raise _os_error(exc, "start an upload") from None

        fd = await self._io(create_temp)
        return _Writer(self, bucket, key, block_size, content_type, meta, fd, data_id)

    async def delete(self, bucket: str, key: str, condition: Condition) -> ObjectInfo:
        def delete() -> tuple[ObjectInfo, str]:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = self._select(bucket, key)
                condition(row[2] if row else None)
                if row is None:
                    raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
                db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._index_changed()
            return self._row_info(bucket, row), str(row[8])

        info, data_id = await self._index(delete)
        await self._io(lambda: self._remove_version(bucket, data_id))
        return info

    async def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        continuation: str | None = None,
        limit: int = 1000,
    ) -> ListPage:
        start = decode_continuation(continuation) if continuation is not None else prefix
        start = max(start, prefix)
        bound = successor(prefix) or None

        def page() -> ListPage:
            entries: list[ObjectInfo] = []
            prefixes: list[str] = []
            position = start
            while len(entries) + len(prefixes) < limit:
                want = limit - len(entries) - len(prefixes) + 1
                sql = f"SELECT {_COLUMNS} FROM objects WHERE bucket = ? AND key >= ?"
                args: list[Any] = [bucket, position]
                if bound is not None:
                    sql += " AND key < ?"
                    args.append(bound)
                rows = self.db.execute(sql + " ORDER BY key LIMIT ?", [*args, want]).fetchall()
                if not rows:
                    return ListPage(entries=entries, prefixes=prefixes, next=None)
                restarted = False
                for row in rows:
                    if len(entries) + len(prefixes) == limit:
                        return ListPage(
                            entries=entries, prefixes=prefixes, next=encode_continuation(position)
                        )
                    rolled = roll_up(row[0], prefix, delimiter)
                    if rolled is not None:
                        prefixes.append(rolled)
                        position = successor(rolled)
                        restarted = True
                        break
                    entries.append(self._row_info(bucket, row))
                    position = after_key(row[0])
                if not restarted and len(rows) < want:
                    return ListPage(entries=entries, prefixes=prefixes, next=None)
            more = self.db.execute(
                "SELECT 1 FROM objects WHERE bucket = ? AND key >= ?"
                + (" AND key < ?" if bound is not None else "")
                + " LIMIT 1",
                [bucket, position, *([bound] if bound is not None else [])],
            ).fetchone()
            return ListPage(
                entries=entries,
                prefixes=prefixes,
                next=encode_continuation(position) if more else None,
            )

        return await self._index(page)

    async def close(self) -> None:
        if self._lookup_db is not None:
            self._lookup_db.close()
            self._lookup_db = None
        if self._generation is not None:
            self._generation.close()
            self._generation = None
        self._rows.clear()
        if self._db is not None:
            await self._index(self.db.close)
            self._db = None
        self._index_pool.shutdown(wait=True)
        self._io_pool.shutdown(wait=True)
