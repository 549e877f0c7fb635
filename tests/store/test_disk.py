"""The disk store's own guarantees: layout, crash recovery, keys never become paths, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from crc32c import crc32c

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.store import disk as disk_module
from quicstore.store.disk import DiskStore


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
    reader = await store.open("b", "k")
    buf = bytearray(len(body))
    got = 0
    while got < len(body):
        got += await reader.read_into(got, memoryview(buf)[got:])
    assert bytes(buf) == body
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
