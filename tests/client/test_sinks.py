"""Where downloads go: FileSink's staged positional writes, inline on a memory file system
and on a thread elsewhere, with the receive credit held back while the disk lags."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from quicstore.client import sinks
from quicstore.client.sinks import FileSink


def _pieces(body: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    edges = [0, *cuts, len(body)]
    return [(a, body[a:b]) for a, b in itertools.pairwise(edges) if b > a]


@pytest.mark.parametrize("inline", [True, False])
async def test_pieces_of_several_parts_land_at_their_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    """Two parts' pieces interleaved, some read-only (kept, not copied), some in a
    writable buffer that is changed right after the call (copied first): the file holds
    the body, renamed into place on commit; runs are written in about a megabyte each."""
    monkeypatch.setattr(sinks, "FILE_STAGING", 64 * 1024)
    body = os.urandom(300_000)
    sink = FileSink(tmp_path / "out.bin", len(body))
    sink.inline = inline
    first = _pieces(body[:150_000], [1, 7_000, 70_000, 140_000])
    second = [(a + 150_000, b) for a, b in _pieces(body[150_000:], [50_000, 149_999])]
    for (a, x), (b, y) in zip(first, second, strict=False):
        assert sink.write(a, memoryview(x), lambda n: None)
        scratch = bytearray(y)
        assert sink.write(b, scratch, lambda n: None)
        scratch[:] = bytes(len(scratch))  # the owner reuses its buffer
    for a, x in first[len(second) :]:
        assert sink.write(a, x, lambda n: None)
    await sink.commit()
    assert (tmp_path / "out.bin").read_bytes() == body
    assert not (tmp_path / "out.bin.part").exists()


async def test_credit_is_held_while_the_thread_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a memory file system, writes go to a thread; beyond FILE_BACKLOG bytes waiting,
    write() returns False and gives the credit back once the backlog drains."""
    monkeypatch.setattr(sinks, "FILE_STAGING", 1000)
    monkeypatch.setattr(sinks, "FILE_BACKLOG", 2500)
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = sinks._pwrite_all

    def slow_write(fd: int, pieces: list[memoryview], offset: int) -> int:
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        return real(fd, pieces, offset)

    monkeypatch.setattr(sinks, "_pwrite_all", slow_write)
    body = os.urandom(4000)
    sink = FileSink(tmp_path / "out.bin", len(body))
    sink.inline = False
    released: list[int] = []
    answers = [sink.write(i, body[i : i + 1000], released.append) for i in range(0, 4000, 1000)]
    assert answers == [True, True, False, False] and not released
    gate.set()
    await sink.commit()
    assert sorted(released) == [1000, 1000]
    assert (tmp_path / "out.bin").read_bytes() == body


async def test_a_failed_inline_write_is_raised_by_flush(tmp_path: Path) -> None:
    """An error of an inline write (here: the descriptor is gone) does not escape write()
    into the receive path; flush() raises it."""
    sink = FileSink(tmp_path / "out.bin", 10)
    sink.inline = True
    os.close(sink._fd)
    assert sink.write(0, b"0123456789", lambda n: None)
    with pytest.raises(OSError):
        await sink.flush()
    sink._fd = -1
    sink.abort()


@pytest.mark.parametrize(
    ("kind", "inline"), [("tmpfs", True), ("ramfs", True), ("ext4", False), (None, False)]
)
def test_inline_writes_are_chosen_on_a_memory_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str | None, inline: bool
) -> None:
    """Writes are inline where the file's file system is a memory one; on any other, or
    one the mount table does not name, they go to a thread."""
    seen: list[Path] = []

    def fake_type(path: Path) -> str | None:
        seen.append(path)
        return kind

    monkeypatch.setattr(sinks, "file_system_type", fake_type)
    sink = FileSink(tmp_path / "x.bin", 1)
    assert sink.inline is inline and seen == [tmp_path / "x.bin.part"]
    sink.abort()


def test_short_writes_go_on_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pwritev may write less than asked: the rest follows from the byte it stopped at,
    inside a piece or at a piece's edge."""
    real = os.pwritev
    calls: list[int] = []

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(offset)
        budget = 7 if len(calls) % 2 else 10  # cut inside pieces and at their edges
        kept, left = [], budget
        for b in buffers:
            if left <= 0:
                break
            kept.append(b[:left])
            left -= len(kept[-1])
        return real(fd, kept, offset)

    monkeypatch.setattr(sinks.os, "pwritev", short)
    body = os.urandom(45)
    pieces = [memoryview(body[a:b]) for a, b in itertools.pairwise([0, 3, 10, 11, 30, 45])]
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert sinks._pwrite_all(fd, pieces, 5) == 45
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(5) + body
    assert len(calls) > 4
