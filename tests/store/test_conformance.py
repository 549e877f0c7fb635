"""The Store contract, run against every backend (memory, disk, Azure over Azurite and S3 over
moto's S3 server)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.proto.integrity import block_checksums, pack_checksums
from quicstore.proto.messages import RequestHeader
from quicstore.proto.semantics import check_conditions, etag_from_sha256
from quicstore.store.base import Store
from quicstore.store.disk import DiskStore
from quicstore.store.memory import MemoryStore

from .azurite import (
    azurite,  # noqa: F401 (fixture)
    unique_prefix,
)


@pytest.fixture(params=["memory", "disk", "azure", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "disk":
        s = await DiskStore.open_at(tmp_path)
    elif request.param == "s3":
        from quicstore.store.s3 import S3Store

        s = await S3Store.connect(request.getfixturevalue("moto_server").config())
    else:
        from quicstore.store.azure import AzureStore, AzureStoreConfig

        running = request.getfixturevalue("azurite")
        s = await AzureStore.connect(
            AzureStoreConfig(running.connection_string, container_prefix=unique_prefix())
        )
    yield s
    await s.close()


def put_condition(**fields: str) -> object:
    header = RequestHeader(op="PUT", bucket="b", key="k", **fields)  # type: ignore[arg-type]
    return lambda etag: check_conditions(header, etag)


def always(etag: str | None) -> None:
    pass


async def put(store: Store, key: str, body: bytes, bucket: str = "b", **kw: object) -> object:
    writer = await store.create(bucket, key, block_size=4096, **kw)  # type: ignore[arg-type]
    for i in range(0, len(body), 10000):
        await writer.write([body[i : i + 10000]])
    return await writer.commit(sha256=None, content_length=None, condition=always)


async def read_all(store: Store, key: str, bucket: str = "b") -> bytes:
    reader = await store.open(bucket, key)
    try:
        out = bytearray(reader.info.size)
        view = memoryview(out)
        pos = 0
        while pos < len(out):
            n = await reader.read_into(pos, view[pos : pos + 7000])
            assert n > 0
            pos += n
        return bytes(out)
    finally:
        await reader.close()


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, 100_003])
async def test_put_then_read_back(store: Store, size: int) -> None:
    body = bytes((i * 7) % 251 for i in range(size))
    info = await put(store, "a/b", body, content_type="x/y", meta={"m": "1"})
    assert info.size == size  # type: ignore[attr-defined]
    assert info.sha256 == hashlib.sha256(body).digest()  # type: ignore[attr-defined]
    assert info.etag == etag_from_sha256(hashlib.sha256(body).digest())  # type: ignore[attr-defined]
    assert await read_all(store, "a/b") == body
    stat = await store.stat("b", "a/b")
    assert stat == info and stat.meta == {"m": "1"} and stat.content_type == "x/y"
    reader = await store.open("b", "a/b")
    blocks = -(-size // 4096)
    assert await reader.read_checksums(0, blocks) == pack_checksums(block_checksums(body, 4096))
    if blocks > 1:
        assert await reader.read_checksums(1, 1) == pack_checksums(block_checksums(body, 4096)[1:2])
    await reader.close()


async def test_missing_objects(store: Store) -> None:
    for coro in (store.stat("b", "nope"), store.open("b", "nope")):
        with pytest.raises(RequestError) as exc:
            await coro
        assert exc.value.code == ErrorCode.QS_NOT_FOUND
    with pytest.raises(RequestError) as exc:
        await store.delete("b", "nope", always)
    assert exc.value.code == ErrorCode.QS_NOT_FOUND


async def test_upload_is_invisible_until_commit_and_abort_leaves_nothing(store: Store) -> None:
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"partial"])
    with pytest.raises(RequestError):
        await store.stat("b", "k")
    await writer.abort()
    with pytest.raises(RequestError):
        await store.stat("b", "k")


async def test_integrity_checks_at_commit(store: Store) -> None:
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"hello"])
    with pytest.raises(RequestError) as exc:
        await writer.commit(sha256=bytes(32), content_length=None, condition=always)
    assert exc.value.code == ErrorCode.QS_INTEGRITY_ERROR
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"hello"])
    with pytest.raises(RequestError):
        await writer.commit(sha256=None, content_length=6, condition=always)
    writer = await store.create("b", "k", block_size=4)
    await writer.expect_checksums(0, [0])
    with pytest.raises(RequestError) as exc:
        await writer.write([b"hello"])
    assert exc.value.code == ErrorCode.QS_INTEGRITY_ERROR
    await writer.abort()
    with pytest.raises(RequestError):
        await store.stat("b", "k")
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"hello"])
    info = await writer.commit(
        sha256=hashlib.sha256(b"hello").digest(), content_length=5, condition=always
    )
    assert info.size == 5


async def test_conditional_commit_and_delete(store: Store) -> None:
    first = await put(store, "k", b"v1")
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"v2"])
    with pytest.raises(RequestError) as exc:
        await writer.commit(
            sha256=None, content_length=None, condition=put_condition(if_none_match="*")
        )  # type: ignore[arg-type]
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert await read_all(store, "k") == b"v1"
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([b"v2"])
    await writer.commit(
        sha256=None, content_length=None, condition=put_condition(if_match=first.etag)
    )  # type: ignore[attr-defined,arg-type]
    assert await read_all(store, "k") == b"v2"
    delete_header = RequestHeader(op="DELETE", bucket="b", key="k", if_match=first.etag)  # type: ignore[attr-defined]
    with pytest.raises(RequestError) as exc:
        await store.delete("b", "k", lambda e: check_conditions(delete_header, e))
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    removed = await store.delete("b", "k", always)
    assert removed.size == 2


async def test_reader_keeps_its_version_while_replaced_and_deleted(
    store: Store, request: pytest.FixtureRequest
) -> None:
    await put(store, "k", b"A" * 50_000)
    reader = await store.open("b", "k")
    await put(store, "k", b"B" * 50_000)
    buf = bytearray(50_000)
    if request.node.callspec.params["store"] in ("azure", "s3"):
        # Azure and S3 (unversioned) keep no replaced version: the reader pinned to it fails
        # cleanly (the client reports ObjectChanged), never returning the new version's bytes.
        for deleted in (False, True):
            if deleted:
                await store.delete("b", "k", always)
            with pytest.raises(RequestError) as exc:
                await reader.read_into(0, memoryview(buf))
            assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
            assert bytes(buf) == bytes(50_000)
        await reader.close()
        return
    await store.delete("b", "k", always)
    assert await reader.read_into(0, memoryview(buf)) == 50_000
    assert bytes(buf) == b"A" * 50_000
    await reader.close()


async def test_concurrent_puts_of_one_key_leave_one_whole_version(store: Store) -> None:
    bodies = [bytes([i]) * 30_000 for i in range(6)]
    await asyncio.gather(*(put(store, "k", body) for body in bodies))
    assert await read_all(store, "k") in bodies


async def list_all(store: Store, **kw: object) -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token = None
    while True:
        page = await store.list("b", continuation=token, **kw)  # type: ignore[arg-type]
        pages += 1
        keys += [e.key for e in page.entries]
        prefixes += page.prefixes
        token = page.next
        if token is None:
            return keys, prefixes, pages


async def test_list_pages_in_byte_order(store: Store) -> None:
    names = ["a", "a/1", "a/2", "a/2/x", "b", "é", "z", "ab", "a-c", "\U0001f600"]
    for name in names:
        await put(store, name, b"x")
    await put(store, "other-bucket-key", b"x", bucket="c")
    expected = sorted(names, key=lambda k: k.encode())
    for limit in (1, 2, 3, 100):
        keys, _, pages = await list_all(store, limit=limit)
        assert keys == expected
        assert pages == -(-len(names) // limit) or pages == -(-len(names) // limit) + 1
    keys, _, _ = await list_all(store, prefix="a/", limit=2)
    assert keys == ["a/1", "a/2", "a/2/x"]
    keys, prefixes, _ = await list_all(store, prefix="a/", delimiter="/", limit=1)
    assert keys == ["a/1", "a/2"] and prefixes == ["a/2/"]
    keys, prefixes, _ = await list_all(store, delimiter="/", limit=2)
    assert prefixes == ["a/"] and "a" in keys and "a/1" not in keys
    page = await store.list("b", prefix="nothing")
    assert page.entries == [] and page.next is None


async def test_bad_continuation(store: Store) -> None:
    with pytest.raises(RequestError) as exc:
        await store.list("b", continuation="!!not-a-token!!")
    assert exc.value.code == ErrorCode.QS_BAD_REQUEST


async def test_listing_during_inserts_lists_stable_keys_once(store: Store) -> None:
    for i in range(0, 40, 2):
        await put(store, f"k{i:03d}", b"x")
    seen: list[str] = []
    token = None
    i = 1
    while True:
        page = await store.list("b", continuation=token, limit=3)
        seen += [e.key for e in page.entries]
        if i < 40:
            await put(store, f"k{i:03d}", b"x")  # insert between pages
            i += 2
        token = page.next
        if token is None:
            break
    stable = [f"k{i:03d}" for i in range(0, 40, 2)]
    assert [k for k in seen if k in stable] == stable
    assert len(seen) == len(set(seen))
