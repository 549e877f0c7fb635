"""An in-memory store, for tests and examples. Same semantics as the disk store."""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..proto.codes import ErrorCode
from ..proto.errors import RequestError
from ..proto.frames import Buffer
from ..proto.integrity import pack_checksums
from .base import (
    Condition,
    ListPage,
    ObjectInfo,
    VerifyingDigester,
    deletable,
    page_from_sorted_keys,
)


@dataclass(frozen=True, slots=True)
class _Version:
    info: ObjectInfo
    data: bytes
    checksums: bytes


class _Reader:
    def __init__(self, version: _Version) -> None:
        self.info = version.info
        self._version = version

    async def read_into(self, offset: int, buffer: memoryview) -> int:
        chunk = self._version.data[offset : offset + len(buffer)]
        buffer[: len(chunk)] = chunk
        return len(chunk)

    async def read_checksums(self, first_block: int, count: int) -> bytes:
        return self._version.checksums[first_block * 4 : (first_block + count) * 4]

    async def close(self) -> None:
        pass


class _Writer:
    def __init__(
        self,
        store: MemoryStore,
        bucket: str,
        key: str,
        block_size: int,
        content_type: str | None,
        meta: dict[str, str] | None,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._meta = meta or {}
        self._body = bytearray()
        self._digest = VerifyingDigester(block_size)
        self._done = False

    @property
    def size(self) -> int:
        return len(self._body)

    async def write(self, chunks: Sequence[Buffer]) -> None:
        for chunk in chunks:
            self._digest.update(chunk)
            self._body += chunk

    async def expect_checksums(self, first_block: int, checksums: Sequence[int]) -> None:
        self._digest.expect(first_block, checksums)

    async def commit(
        self, *, sha256: bytes | None, content_length: int | None, condition: Condition
    ) -> ObjectInfo:
        if self._done:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "upload already finished")
        self._done = True
        checksums, digest, etag = self._digest.finish(sha256=sha256, content_length=content_length)
        current = self._store._objects.get((self._bucket, self._key))
        condition(current.info.etag if current else None)
        info = ObjectInfo(
            bucket=self._bucket,
            key=self._key,
            size=len(self._body),
            etag=etag,
            mtime_ns=time.time_ns(),
            block_size=self._digest.digester.block_size,
            sha256=digest,
            content_type=self._content_type,
            meta=dict(self._meta),
        )
        self._store._put(_Version(info, bytes(self._body), pack_checksums(checksums)))
        return info

    async def abort(self) -> None:
        self._done = True
        self._body = bytearray()


class MemoryStore:
    """Objects held in a dict; versions are immutable bytes, so readers stay consistent."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], _Version] = {}
        self._keys: dict[str, list[str]] = {}

    def _put(self, version: _Version) -> None:
        info = version.info
        keys = self._keys.setdefault(info.bucket, [])
        if (info.bucket, info.key) not in self._objects:
            bisect.insort(keys, info.key)  # str order is code point order: UTF-8 byte order
        self._objects[(info.bucket, info.key)] = version

    def _get(self, bucket: str, key: str) -> _Version:
        version = self._objects.get((bucket, key))
        if version is None:
            raise RequestError(ErrorCode.QS_NOT_FOUND, "no such object")
        return version

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        return self._get(bucket, key).info

    async def open(self, bucket: str, key: str) -> _Reader:
        return _Reader(self._get(bucket, key))

    async def create(
        self,
        bucket: str,
        key: str,
        *,
        block_size: int,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> _Writer:
        return _Writer(self, bucket, key, block_size, content_type, meta)

    async def delete(self, bucket: str, key: str, condition: Condition) -> ObjectInfo:
        current = self._objects.get((bucket, key))
        info = deletable(condition, current.info if current else None)
        del self._objects[(bucket, key)]
        self._keys[bucket].remove(key)
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
        keys = self._keys.get(bucket, [])
        return page_from_sorted_keys(
            keys,
            lambda k: self._objects[(bucket, k)].info,
            prefix=prefix,
            delimiter=delimiter,
            continuation=continuation,
            limit=limit,
        )

    async def close(self) -> None:
        pass
