"""The disk store's own guarantees: layout, crash recovery, keys never become paths, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from crc32c import crc32c

from quicstore.fsinfo import MEMORY_FILE_SYSTEMS, file_system_type
from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.store import disk as disk_module
from quicstore.store.disk import DiskStore
from tests.store.test_conformance import read_all


def always(etag: str | None) -> None:
    pass


async def put(store: DiskStore, key: str, body: bytes) -> None:
    writer = await store.create("b", key, block_size=4096)
    await writer.write([body])
    await writer.commit(sha256=None, content_length=None, condition=always)


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


async def test_hostile_keys_live_only_in_the_index(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = await DiskStore.open_at(root)
    for key in ("../../escape", "/abs/path", "a/../../../b", "..", "x" * 200 + "/" * 3):
        await put(store, key, b"data")
    await store.close()
    assert files_under(tmp_path) == files_under(root)
    data_files = files_under(root / "store" / "data")
    assert len(data_files) == 10  # five versions: .obj and .crc each
    assert all(len(p.stem) == 32 and p.parent.parent.name == "b" for p in data_files)


async def test_interrupted_upload_leaves_nothing_after_restart(tmp_path: Path) -> None:
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"previous")
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"new version, never committed"])
    # Simulate a crash: the process dies without abort or commit; also an orphan version
    # whose rename happened but whose index commit did not.
    orphan = store.data_dir / "b" / "ab" / ("ab" + "0" * 30 + ".obj")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"torn")
    store._index_pool.shutdown(wait=True)
    store._io_pool.shutdown(wait=True)
    reopened = await DiskStore.open_at(tmp_path)
    assert reopened.recovered_temporaries == 1
    assert reopened.recovered_orphans == 1
    assert not any(reopened.tmp_dir.iterdir())
    reader = await reopened.open("b", "k")
    buf = bytearray(100)
    n = await reader.read_into(0, memoryview(buf))
    assert bytes(buf[:n]) == b"previous"
    await reader.close()
    await reopened.close()


async def test_replacing_and_deleting_remove_old_files(tmp_path: Path) -> None:
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"one")
    await put(store, "k", b"two")
    assert len(files_under(store.data_dir)) == 2
    await store.delete("b", "k", always)
    assert files_under(store.data_dir) == set()
    await store.close()


async def test_disk_full_is_insufficient_storage_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await DiskStore.open_at(tmp_path)

    def full(fd: int, buffers: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_module.os, "writev", full)
    writer = await store.create("b", "k", block_size=4096)
    with pytest.raises(RequestError) as exc:
        await writer.write([b"x" * 1000])
    assert exc.value.code == ErrorCode.QS_INSUFFICIENT_STORAGE
    await writer.abort()
    assert not any(store.tmp_dir.iterdir())
    await store.close()


async def test_missing_data_file_is_a_clean_internal_error(tmp_path: Path) -> None:
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"data")
    for path in files_under(store.data_dir):
        if path.suffix == ".obj":
            os.unlink(path)
    with pytest.raises(RequestError) as exc:
        await store.open("b", "k")
    assert exc.value.code == ErrorCode.QS_INTERNAL_ERROR
    await store.close()


async def test_index_survives_reopen(tmp_path: Path) -> None:
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"data")
    info = await store.stat("b", "k")
    await store.close()
    again = await DiskStore.open_at(tmp_path)
    assert await again.stat("b", "k") == info
    await again.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_reads_from_cache_inline_or_through_threads_agree(
    tmp_path: Path, inline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads try the page cache inline (RWF_NOWAIT) and fall back to the I/O threads when
    the kernel would block or the file system refuses the flag; the bytes are the same."""
    store = await DiskStore.open_at(tmp_path)
    store.memory_backed = False  # as on a disk, wherever the test's folder is
    store.nowait_reads = bool(disk_module._RWF_NOWAIT)
    body = os.urandom(300_001)
    await put(store, "k", body)
    threaded = 0
    original_io = store._io

    async def counting_io(fn):  # type: ignore[no-untyped-def]
        nonlocal threaded
        threaded += 1
        return await original_io(fn)

    monkeypatch.setattr(store, "_io", counting_io)
    if not inline:
        real_preadv = os.preadv

        def refusing_preadv(fd, buffers, offset, flags=0):  # type: ignore[no-untyped-def]
            if flags:
                raise OSError(errno.EOPNOTSUPP, "not supported")
            return real_preadv(fd, buffers, offset)

        monkeypatch.setattr(disk_module.os, "preadv", refusing_preadv)
    assert await read_all(store, "k") == body
    reader = await store.open("b", "k")
    blocks = -(-len(body) // 4096)
    expected = b"".join(
        crc32c(body[i * 4096 : (i + 1) * 4096]).to_bytes(4, "big") for i in range(blocks)
    )
    assert await reader.read_checksums(0, blocks) == expected
    if inline and disk_module._RWF_NOWAIT:
        assert threaded == 0  # just written: in the page cache
    else:
        assert threaded >= 1 and not store.nowait_reads
    await reader.close()
    await store.close()


async def test_a_store_in_memory_reads_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """On tmpfs, which refuses RWF_NOWAIT, reads are done inline: before, every read of
    such a store went through the I/O threads (5x the cost of open, read and close of a
    4 KiB object in a scratch micro-benchmark)."""
    import tempfile

    if file_system_type(Path("/dev/shm")) not in MEMORY_FILE_SYSTEMS:
        pytest.skip("/dev/shm is not a tmpfs here")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        store = await DiskStore.open_at(Path(folder))
        assert store.memory_backed and not store.nowait_reads
        body = os.urandom(300_001)
        await put(store, "k", body)

        async def no_threads(fn):  # type: ignore[no-untyped-def]
            raise AssertionError("a read went to the I/O threads")

        monkeypatch.setattr(store, "_io", no_threads)
        assert await read_all(store, "k") == body
        reader = await store.open("b", "k")
        assert len(await reader.read_checksums(0, 74)) == 74 * 4
        await reader.close()
        monkeypatch.undo()
        await store.close()


async def test_lookups_run_inline_and_see_every_commit(tmp_path: Path) -> None:
    """stat and open answer on the event loop's thread (no index-thread hop), and each one
    sees the latest committed version, also one committed by another process's store."""
    store = await DiskStore.open_at(tmp_path)
    other = await DiskStore.open_at(tmp_path, recover=False)  # a second gateway worker
    await put(store, "k", b"one")
    hops = 0
    original_index = store._index

    async def counting_index(fn):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await original_index(fn)

    store._index = counting_index  # type: ignore[method-assign]
    for body in (b"two", b"three" * 1000):
        await put(other, "k", body)
        info = await store.stat("b", "k")
        reader = await store.open("b", "k")
        buf = bytearray(info.size)
        assert await reader.read_into(0, memoryview(buf)) == len(body) and buf == body
        assert reader.info == info
        await reader.close()
    with pytest.raises(RequestError) as exc:
        await store.stat("b", "absent")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    with pytest.raises(RequestError) as exc:
        await store.open("b", "absent")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    assert hops == 0
    await other.close()
    await store.close()


async def test_open_retries_when_a_commit_unlinks_the_version_it_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version found inline is replaced (files unlinked) before it is opened: the lookup
    is repeated and the new version is returned, never an error."""
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"old")
    stale = store._lookup("b", "k")
    await put(store, "k", b"new")
    real_lookup = store._lookup
    answers = iter([stale])
    monkeypatch.setattr(store, "_lookup", lambda b, k: next(answers, None) or real_lookup(b, k))
    reader = await store.open("b", "k")
    buf = bytearray(3)
    await reader.read_into(0, memoryview(buf))
    assert buf == b"new"
    await reader.close()
    await store.close()


async def test_busy_index_sends_lookups_to_the_index_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When SQLite would wait (busy/locked), the inline lookup gives way to the index thread
    and the answer is the same; a broken inline connection turns inline lookups off."""
    import sqlite3

    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"data")
    expected = await store.stat("b", "k")
    refused: list[str] = []

    def busy(bucket: str, key: str) -> None:
        refused.append(key)
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_lookup", busy)
    store._rows.clear()  # rows looked up before would answer without a query
    assert await store.stat("b", "k") == expected
    reader = await store.open("b", "k")
    assert reader.info == expected
    await reader.close()
    assert refused == ["k", "k"]
    assert store.inline_lookups

    def broken(bucket: str, key: str) -> None:
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr(store, "_lookup", broken)
    assert await store.stat("b", "k") == expected
    assert not store.inline_lookups
    await store.close()


def count_queries(store: DiskStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys the store's inline lookups asked SQLite for (not answered from its row cache)."""
    asked: list[str] = []
    lookup = store._lookup

    def counted(bucket: str, key: str) -> object:
        asked.append(key)
        return lookup(bucket, key)

    monkeypatch.setattr(store, "_lookup", counted)
    return asked


async def test_lookups_reuse_rows_until_the_index_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await DiskStore.open_at(tmp_path)
    await put(store, "k", b"first")
    asked = count_queries(store, monkeypatch)
    for _ in range(5):
        assert (await store.stat("b", "k")).size == 5
        assert await read_all(store, "k") == b"first"
    with pytest.raises(RequestError):
        await store.stat("b", "absent")
    with pytest.raises(RequestError):
        await store.open("b", "absent")
    assert asked == ["k", "absent"]  # one query each; the rest from the cache
    await put(store, "k", b"second!")  # the next lookups see it at once
    assert await read_all(store, "k") == b"second!"
    assert (await store.stat("b", "k")).size == 7
    await store.delete("b", "k", lambda etag: None)
    with pytest.raises(RequestError) as raised:
        await store.open("b", "k")
    assert raised.value.code == ErrorCode.QS_NOT_FOUND
    assert asked == ["k", "absent", "k", "k"]
    await store.close()


async def test_a_change_made_by_another_process_is_seen_by_the_next_lookup(
    tmp_path: Path,
) -> None:
    """Gateway workers share a store, each with its own row cache: a PUT or DELETE that one
    of them acknowledged is what the others' next GET reads."""
    first = await DiskStore.open_at(tmp_path)
    second = await DiskStore.open_at(tmp_path, recover=False)
    await put(first, "k", b"one")
    assert await read_all(second, "k") == b"one"  # now in the second's cache
    await put(first, "k", b"two-two")
    assert await read_all(second, "k") == b"two-two"
    assert (await second.stat("b", "k")).size == 7
    await first.delete("b", "k", lambda etag: None)
    with pytest.raises(RequestError):
        await second.stat("b", "k")
    await put(second, "k", b"three")
    assert await read_all(first, "k") == b"three"
    await first.close()
    await second.close()


def test_bumps_of_the_index_generation_from_two_processes_are_never_lost(
    tmp_path: Path,
) -> None:
    """Two handles on the file (as two processes have) bumping at once: every bump counts,
    so no change can leave another process's cache looking current."""
    import threading

    path = tmp_path / "index.generation"
    handles = [disk_module.IndexGeneration(path), disk_module.IndexGeneration(path)]
    assert handles[0].read() == 0

    def bump_many(handle: disk_module.IndexGeneration) -> None:
        for _ in range(300):
            handle.bump()

    threads = [threading.Thread(target=bump_many, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handles[0].read() == handles[1].read() == 600
    for handle in handles:
        handle.close()
