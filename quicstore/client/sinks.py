"""Where downloaded bytes go: memory, a caller's buffer, or a file (positional writes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..proto.frames import Buffer

FILE_STAGING = 1024 * 1024
"""Bytes gathered per part before one positional write to a file."""
FILE_BACKLOG = 32 * 1024 * 1024
"""Bytes waiting for the disk beyond which receive credit is held back."""


Release = Callable[[int], None]
"""Gives ``n`` bytes of receive credit back to the connection."""


class Sink(Protocol):
    """Receives the bytes of a range at their offsets (relative to the range's start)."""

    def write(self, offset: int, data: Buffer, release: Release) -> bool:
        """Store ``data`` at ``offset``. True if done with ``data`` now; False if it will
        call ``release(len(data))`` later (back-pressure from a slow destination)."""
        ...

    async def flush(self) -> None:
        """Wait for every pending write."""
        ...


class MemorySink:
    """Bytes into a preallocated buffer (a new bytearray, or the caller's)."""

    def __init__(self, buffer: bytearray | memoryview) -> None:
        self.buffer = buffer
        self._view = memoryview(buffer).cast("B")

    def write(self, offset: int, data: Buffer, release: Release) -> bool:
        self._view[offset : offset + len(data)] = data
        return True

    async def flush(self) -> None:
        return None


class FileSink:
    """Bytes into a file by positional writes on a thread (no whole-object buffer), staged
    per writer position so that each system call writes about a megabyte.

    The file is written as ``<path>.part`` and renamed into place by :meth:`commit`, so a
    failed download never leaves a file that looks complete.
    """

    def __init__(self, path: Path, length: int) -> None:
        self.path = path
        self.temp = path.with_name(path.name + ".part")
        self.length = length
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, length)
        self._staging: dict[int, tuple[int, bytearray]] = {}
        """Staged bytes by the offset where their run will end next: (start, bytes)."""
        self._pending: set[asyncio.Future[int]] = set()
        self._backlog = 0
        self._held: list[tuple[Release, int]] = []

    def write(self, offset: int, data: Buffer, release: Release) -> bool:
        run = self._staging.pop(offset, None)
        if run is None:
            run = (offset, bytearray())
        start, staged = run
        staged += data
        end = start + len(staged)
        self._backlog += len(data)
        if len(staged) >= FILE_STAGING or end == self.length:
            self._submit(start, staged)
        else:
            self._staging[end] = (start, staged)
        if self._backlog > FILE_BACKLOG:
            self._held.append((release, len(data)))
            return False
        return True

    def _submit(self, start: int, staged: bytearray) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, _pwrite_all, self._fd, staged, start)
        self._pending.add(future)
        future.add_done_callback(lambda f: self._written(f, len(staged)))

    def _written(self, future: asyncio.Future[int], size: int) -> None:
        self._pending.discard(future)
        self._backlog -= size
        while self._held and self._backlog <= FILE_BACKLOG:
            release, held = self._held.pop()
            release(held)

    async def flush(self) -> None:
        for end, (start, staged) in list(self._staging.items()):
            del self._staging[end]
            self._submit(start, staged)
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def commit(self) -> None:
        """Flush, fsync and rename the file into place."""
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        """Remove the partial file."""
        self._held.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


def _pwrite_all(fd: int, data: bytearray, offset: int) -> int:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return len(data)
