"""What only the Azure Blob store does (quicstore/store/azure.py), against a real Azurite:
pinned reads on replace, staged blocks that never show, metadata and trailer round trips,
bucket names Azure rejects, races on conditional commits, service failures, and the CLI's
``serve --store azure`` usage errors. The Store contract itself is test_conformance.py's."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.proto.integrity import block_checksums
from quicstore.store.base import ObjectInfo
from tools.azurite import Azurite

from .azurite import azurite, unique_prefix  # noqa: F401 (fixture)
from .remote_checks import (
    always,
    check_bucket_name_refused,
    check_commit_rechecks_an_if_match,
    check_commit_rechecks_when_another_writer_slips_in,
    check_delete_rechecks_when_the_object_changed,
    check_list_of_a_bucket_never_written_is_empty,
    check_metadata_over_the_limit_is_refused,
    check_metadata_round_trip,
    check_rejected_buckets_are_invalid_keys_everywhere,
    check_trailer_reads,
    inline_checksums,
    put_in_pieces,
    read_in_pieces,
)

pytest.importorskip("azure.storage.blob", reason="the 'azure' extra is not installed")

from azure.core.exceptions import IncompleteReadError
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobServiceClient

import quicstore.store.azure as azure_store
from quicstore.store.azure import (
    METADATA_LIMIT,
    AzureStore,
    AzureStoreConfig,
    container_name,
)

KIB = 1024


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def store(azurite: Azurite, prefix: str) -> AsyncIterator[AzureStore]:  # noqa: F811
    s = await AzureStore.connect(
        AzureStoreConfig(
            azurite.connection_string, container_prefix=prefix, stage_block_size=64 * KIB
        )
    )
    yield s
    await s.close()


@pytest.fixture
async def sdk(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:  # noqa: F811
    """The SDK itself, to look at what the store left in the account."""
    client = BlobServiceClient.from_connection_string(
        azurite.connection_string, api_version="2025-11-05"
    )
    async with client:
        yield client


async def put(store: AzureStore, key: str, body: bytes, **kw: Any) -> ObjectInfo:
    """Store ``body`` as ``b/key`` in writes of 10,000 bytes."""
    return await put_in_pieces(store, key, body, 10_000, **kw)


async def read(store: AzureStore, key: str) -> bytes:
    """All of ``b/key``, in reads of 30,000 bytes."""
    return await read_in_pieces(store, key, 30_000)


# --- reads pin one version ----------------------------------------------------------------


async def test_reader_fails_cleanly_once_its_version_is_replaced(azurite: Azurite) -> None:  # noqa: F811
    """Bytes downloaded before the blob is replaced are still the old version's; the first
    read that needs a new request fails (64 KiB windows here, so that most of the object is
    still to download when the blob is replaced)."""
    config = AzureStoreConfig(
        azurite.connection_string,
        container_prefix=unique_prefix(),
        read_ahead=64 * KIB,
        read_ahead_first=64 * KIB,
    )
    store = await AzureStore.connect(config)
    try:
        old = os.urandom(300_000)
        await put(store, "k", old)
        reader = await store.open("b", "k")
        buf = bytearray(300_000)
        view = memoryview(buf)
        got = 0
        while got < 100_000:  # part of it read (read-ahead windows downloaded)
            got += await reader.read_into(got, view[got : got + 20_000])
        await put(store, "k", os.urandom(300_000))
        with pytest.raises(RequestError) as exc:
            while got < len(buf):
                n = await reader.read_into(got, view[got : got + 20_000])
                assert n > 0
                got += n
        assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
        assert "replaced" in exc.value.reason
        assert got < len(buf)
        assert buf[:got] == old[:got]  # only the old version's bytes, never the new one's
        await reader.close()
        assert (await store.stat("b", "k")).size == 300_000
    finally:
        await store.close()


def count_downloads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(offset, length) of every ranged download the store makes from now on."""
    ranges: list[tuple[int, int]] = []
    real = azure_store._download

    async def counting(blob: Any, etag: str, start: int, view: memoryview, *rest: Any) -> None:
        ranges.append((start, len(view)))
        await real(blob, etag, start, view, *rest)

    monkeypatch.setattr(azure_store, "_download", counting)
    return ranges


async def read_range(reader: Any, start: int, length: int, chunk: int = 256 * KIB) -> bytes:
    """``length`` bytes from ``start`` as the gateway reads them: ``chunk`` at a time, three
    reads in flight."""
    out = bytearray(length)

    async def piece(at: int) -> None:
        view = memoryview(out)[at : at + chunk]
        got = 0
        while got < len(view):
            got += await reader.read_into(start + at + got, view[got:])

    pending = [asyncio.ensure_future(piece(at)) for at in range(0, min(length, 3 * chunk), chunk)]
    for at in range(3 * chunk, length, chunk):
        await pending.pop(0)
        pending.append(asyncio.ensure_future(piece(at)))
    await asyncio.gather(*pending)
    return bytes(out)


async def test_read_ahead_serves_contiguous_reads_with_few_requests(
    azurite: Azurite,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 4 MiB range read in 256 KiB pieces (as the gateway does, three in flight) takes
    4 downloads of growing windows (1, 1, 2 and 4 MiB), the last one the read-ahead past
    its end; the bytes are the object's, and every window is dropped once read."""
    config = AzureStoreConfig(azurite.connection_string, container_prefix=unique_prefix())
    store = await AzureStore.connect(config)
    try:
        body = os.urandom(16 * 1024 * KIB)
        await put(store, "big", body, block_size=65536)
        reader = await store.open("b", "big")
        ranges = count_downloads(monkeypatch)
        start = 2 * 1024 * KIB
        assert await read_range(reader, start, 4 * 1024 * KIB) == body[start : start + 4096 * KIB]
        assert [n // KIB for _, n in ranges] == [1024, 1024, 2048, 4096], ranges
        assert [o for o, _ in ranges] == [start + o * KIB for o in (0, 1024, 2048, 4096)]
        # The read-ahead past the range lands.
        await asyncio.gather(*(w.task for w in store._readahead._lru if w.task is not None))
        # Only the window nobody read yet is left (the others' buffers are kept for reuse).
        assert [(w.start, w.size) for w in store._readahead._lru] == [(6 * 1024 * KIB, 4096 * KIB)]
        assert store._readahead.used <= config.read_ahead_memory
        await reader.close()
    finally:
        await store.close()


async def test_parallel_part_readers_share_one_read_ahead(
    azurite: Azurite,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fan-out GET: adjacent 4 MiB parts of one version, two at a time, each through its
    own reader, as the client asks for them. Both runs grow (1, 1, 2, 4 MiB) until the
    first reaches the second's bytes, then one read-ahead serves the parts that follow in
    8 MiB windows (two parts each); every byte is downloaded once, nothing past the end,
    10 requests for 32 MiB (40 at one run of windows per reader), and the windows are gone
    once read."""
    config = AzureStoreConfig(azurite.connection_string, container_prefix=unique_prefix())
    store = await AzureStore.connect(config)
    try:
        part = 4 * 1024 * KIB
        body = os.urandom(8 * part)
        await put(store, "big", body, block_size=65536)
        ranges = count_downloads(monkeypatch)
        peak = 0

        async def read_part(i: int) -> bytes:
            nonlocal peak
            reader = await store.open("b", "big")
            try:
                data = await read_range(reader, i * part, part)
                peak = max(peak, store._readahead.used)
                return data
            finally:
                await reader.close()

        parts: list[bytes] = []
        for i in range(0, 8, 2):
            parts += await asyncio.gather(read_part(i), read_part(i + 1))
        assert b"".join(parts) == body
        sizes = [n // KIB for _, n in ranges]
        assert len(ranges) <= 10 and sizes.count(8192) >= 2, sizes
        covered = sorted(ranges)
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(covered))
        assert sum(n for _, n in ranges) == len(body)  # nothing twice, nothing past the end
        assert peak <= config.read_ahead_memory
        assert not store._readahead._lru  # every window dropped once read
    finally:
        await store.close()


async def test_read_ahead_stays_within_its_memory(
    azurite: Azurite,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight readers of eight objects at once with room for two windows: reads that find no
    room download exactly their bytes into the caller's buffer; the windows never take more
    than the budget and every byte is right."""
    config = AzureStoreConfig(
        azurite.connection_string,
        container_prefix=unique_prefix(),
        read_ahead=1024 * KIB,
        read_ahead_memory=2048 * KIB,
        stage_block_size=1024 * KIB,  # staged: aiohttp warns on a 3 MiB Put Blob body
    )
    store = await AzureStore.connect(config)
    try:
        bodies = [os.urandom(3 * 1024 * KIB) for _ in range(8)]
        for i, body in enumerate(bodies):
            await put(store, f"o{i}", body, block_size=65536)
        ranges = count_downloads(monkeypatch)
        peak = 0
        real_open = store._readahead.open_window

        def watched(*args: Any, **kwargs: Any) -> Any:
            nonlocal peak
            w = real_open(*args, **kwargs)
            peak = max(peak, store._readahead.used)
            return w

        monkeypatch.setattr(store._readahead, "open_window", watched)

        async def whole(i: int) -> bytes:
            reader = await store.open("b", f"o{i}")
            try:
                return await read_range(reader, 0, reader.info.size)
            finally:
                await reader.close()

        assert await asyncio.gather(*(whole(i) for i in range(8))) == bodies
        assert 0 < peak <= config.read_ahead_memory
        assert any(n == 256 * KIB for _, n in ranges)  # some reads found no room
    finally:
        await store.close()


async def test_without_read_ahead_every_read_is_one_request_of_its_size(
    azurite: Azurite,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = AzureStoreConfig(
        azurite.connection_string, container_prefix=unique_prefix(), read_ahead=0
    )
    store = await AzureStore.connect(config)
    try:
        body = os.urandom(100_000)
        await put(store, "k", body)
        ranges = count_downloads(monkeypatch)
        assert await read(store, "k") == body
        assert ranges == [(0, 30_000), (30_000, 30_000), (60_000, 30_000), (90_000, 10_000)]
        assert store._readahead.used == 0
    finally:
        await store.close()


@pytest.mark.parametrize("cuts", [1, 3])
async def test_a_download_cut_short_resumes_where_it_stopped(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch, cuts: int
) -> None:
    """A body that breaks off mid-way is asked for again from where it stopped (``retries``
    times, 2 here); past that the read fails, and the next read asks again."""
    body = os.urandom(600_000)
    await put(store, "k", body)
    real = azure_store._piece
    left, first = cuts, True

    async def flaky(content: Any) -> bytes:
        """1000 bytes of each response, then the connection breaks (``cuts`` times)."""
        nonlocal left, first
        if left and not first:
            left, first = left - 1, True
            raise IncompleteReadError("connection lost")
        piece = await real(content)
        if left:
            first = False
            return piece[:1000]
        return piece

    monkeypatch.setattr(azure_store, "_piece", flaky)
    if cuts <= 2:
        ranges = count_downloads(monkeypatch)
        assert await read(store, "k") == body
        assert left == 0 and ranges == [(0, 600_000)]  # one window, its body resumed once
        return
    reader = await store.open("b", "k")
    with pytest.raises(RequestError) as exc:
        await reader.read_into(0, memoryview(bytearray(30_000)))
    assert exc.value.code == ErrorCode.QS_INTERNAL_ERROR
    out = bytearray(30_000)
    assert await reader.read_into(0, memoryview(out)) == 30_000  # asked again: no cut left
    assert bytes(out) == body[:30_000]
    await reader.close()


# --- writes are invisible until committed ---------------------------------------------------


async def test_staged_blocks_are_invisible_and_never_committed_after_abort(
    store: AzureStore, sdk: BlobServiceClient, prefix: str
) -> None:
    body = os.urandom(200_000)  # over 3 staged blocks of 64 KiB
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([body])
    await writer._drain()  # the staging requests in flight have landed
    blob = sdk.get_blob_client(prefix + "b", "k")
    committed, uncommitted = await blob.get_block_list("all")
    assert committed == [] and len(uncommitted) >= 2  # really staged in Azure
    with pytest.raises(RequestError) as exc:
        await store.stat("b", "k")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    assert (await store.list("b")).entries == []
    assert [b.name async for b in sdk.get_container_client(prefix + "b").list_blobs()] == []
    await writer.abort()
    await writer.abort()  # idempotent
    with pytest.raises(RequestError):
        await store.stat("b", "k")
    # The aborted upload's blocks can never be committed: the next upload of the key
    # publishes only its own bytes and Azure drops the rest.
    other = os.urandom(150_000)
    await put(store, "k", other)
    assert await read(store, "k") == other
    committed, uncommitted = await blob.get_block_list("all")
    assert uncommitted == [] and sum(b.size for b in committed) == len(other)


async def test_a_failed_commit_leaves_nothing(store: AzureStore) -> None:
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([os.urandom(150_000)])
    with pytest.raises(RequestError) as exc:
        await writer.commit(sha256=bytes(32), content_length=None, condition=always)
    assert exc.value.code == ErrorCode.QS_INTEGRITY_ERROR
    with pytest.raises(RequestError):
        await store.stat("b", "k")


async def test_two_multi_block_uploads_of_one_key_one_wins_whole(store: AzureStore) -> None:
    """Azure empties a blob's uncommitted block list at each commit: of two concurrent
    multi-block uploads the second to commit fails cleanly (QS_UNAVAILABLE, retry)."""
    first, second = os.urandom(200_000), os.urandom(210_000)
    a = await store.create("b", "k", block_size=4096)
    b = await store.create("b", "k", block_size=4096)
    await a.write([first])
    await b.write([second])
    await a.commit(sha256=None, content_length=None, condition=always)
    with pytest.raises(RequestError) as exc:
        await b.commit(sha256=None, content_length=None, condition=always)
    assert exc.value.code == ErrorCode.QS_UNAVAILABLE
    assert await read(store, "k") == first


# --- what a blob keeps ----------------------------------------------------------------------


async def test_metadata_round_trip_and_what_azure_sees(
    store: AzureStore, sdk: BlobServiceClient, prefix: str
) -> None:
    body, info = await check_metadata_round_trip(store, put)
    props = await sdk.get_blob_client(prefix + "b", "dir/k").get_blob_properties()
    md = props.metadata
    assert props.size == len(body)  # the blob is exactly the object
    assert props.content_settings.content_type == "application/x-tar"
    assert md["qs_sha256"] == hashlib.sha256(body).hexdigest()
    assert md["qs_size"] == "100000" and md["qs_block_size"] == "4096"
    assert md["qs_mtime_ns"] == str(info.mtime_ns)
    assert md["qs_checksums"] == inline_checksums(body)
    download = await sdk.get_blob_client(prefix + "b", "dir/k").download_blob()
    assert await download.readall() == body


async def test_checksums_past_the_metadata_limit_go_to_a_trailer(
    store: AzureStore, sdk: BlobServiceClient, prefix: str
) -> None:
    body = os.urandom(250_003)  # 15,626 blocks of 16 bytes: 62 KiB of checksums
    info = await put(store, "k", body, block_size=16)
    props = await sdk.get_blob_client(prefix + "b", "k").get_blob_properties()
    assert props.metadata["qs_checksums"] == "trailer"
    sums = block_checksums(body, 16)
    assert props.size == len(body) + 4 * len(sums)
    reader = await check_trailer_reads(store, read, info, body, sums, 7000)
    assert await reader.read_into(len(body), memoryview(bytearray(10))) == 0
    await reader.close()
    # A direct reader of the first qs_size bytes gets exactly the object.
    download = await sdk.get_blob_client(prefix + "b", "k").download_blob(0, len(body))
    assert await download.readall() == body


async def test_metadata_over_azures_limit_is_refused_before_any_byte(store: AzureStore) -> None:
    await check_metadata_over_the_limit_is_refused(store, METADATA_LIMIT)


async def test_blobs_not_written_by_quicstore_are_not_objects(
    store: AzureStore, sdk: BlobServiceClient, prefix: str
) -> None:
    await put(store, "mine", b"x")
    container = sdk.get_container_client(prefix + "b")
    await container.upload_blob("foreign", b"no checksums")
    with pytest.raises(RequestError) as exc:
        await store.stat("b", "foreign")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    assert [e.key for e in (await store.list("b")).entries] == ["mine"]
    # A blob whose quicstore metadata is broken is a clean internal error, not a crash.
    await container.upload_blob("broken", b"abc", metadata={"qs_format": "1", "qs_size": "x"})
    with pytest.raises(RequestError) as exc:
        await store.open("b", "broken")
    assert exc.value.code == ErrorCode.QS_INTERNAL_ERROR


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["a_b", "x.y", "ab-", "a--b", "Ab", "a" * 64])
def test_container_naming_rule(bucket: str) -> None:
    check_bucket_name_refused(container_name, bucket, "Azure")


def test_container_names_that_work() -> None:
    assert container_name("", "data") == "data"
    assert container_name("qs-", "b") == "qs-b"
    assert container_name("", "a-b-1") == "a-b-1"
    with pytest.raises(RequestError):
        container_name("", "ab")  # too short without a prefix


async def test_bucket_names_azure_rejects_get_invalid_key_everywhere(azurite: Azurite) -> None:  # noqa: F811
    store = await AzureStore.connect(AzureStoreConfig(azurite.connection_string))
    try:
        await check_rejected_buckets_are_invalid_keys_everywhere(
            store, ("ab", "under_score", "dot.ted")
        )
    finally:
        await store.close()


@pytest.mark.parametrize("prefix", ["Qs-", "-x", "a--", "a_b", "x" * 62])
def test_bad_container_prefix_is_a_value_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        AzureStore(AzureStoreConfig("UseDevelopmentStorage=true", container_prefix=prefix))


def test_malformed_connection_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="connection string"):
        AzureStore(AzureStoreConfig("not a connection string"))


# --- conditions are race-free ---------------------------------------------------------------


async def test_commit_rechecks_when_another_writer_slips_in(store: AzureStore) -> None:
    """The check saw no object, but one appeared before the publish: the publish (If-None-
    Match: *) fails, the check runs again and refuses; the other writer's version stands."""
    await check_commit_rechecks_when_another_writer_slips_in(store, put, read, b"loser")


async def test_staged_commit_rechecks_an_if_match(store: AzureStore) -> None:
    await check_commit_rechecks_an_if_match(store, put, read, 150_000)  # staged path


async def test_delete_rechecks_when_the_object_changed(store: AzureStore) -> None:
    await check_delete_rechecks_when_the_object_changed(store, put, read)


# --- the service failing -------------------------------------------------------------------


async def test_unreachable_service(azurite: Azurite) -> None:  # noqa: F811
    dead = azurite.connection_string.replace(f":{azurite.port}/", ":9/")
    with pytest.raises(ConnectionError, match="did not accept a request"):
        await AzureStore.connect(AzureStoreConfig(dead, retries=0))
    store = AzureStore(AzureStoreConfig(dead, container_prefix="qs-", retries=0))
    try:
        for call in (store.stat("b", "k"), store.list("b")):
            with pytest.raises(RequestError) as exc:
                await call
            assert exc.value.code == ErrorCode.QS_UNAVAILABLE
    finally:
        await store.close()


async def test_wrong_account_key_is_an_internal_error_not_a_traceback(azurite: Azurite) -> None:  # noqa: F811
    wrong = azurite.connection_string.replace("AccountKey=Eby8", "AccountKey=AAAA")
    with pytest.raises(ConnectionError, match="HTTP 403"):
        await AzureStore.connect(AzureStoreConfig(wrong, retries=0))
    store = AzureStore(AzureStoreConfig(wrong, container_prefix="qs-", retries=0))
    try:
        with pytest.raises(RequestError) as exc:
            await store.stat("b", "k")
        assert exc.value.code == ErrorCode.QS_INTERNAL_ERROR
        assert "403" in exc.value.reason
    finally:
        await store.close()


async def test_list_of_a_bucket_never_written_is_empty(store: AzureStore) -> None:
    await check_list_of_a_bucket_never_written_is_empty(store)


async def test_large_pages_and_blocks_committed_in_order(store: AzureStore) -> None:
    body = os.urandom(64 * KIB * 5 + 123)  # 5 full staged blocks and a tail
    info = await put(store, "k", body)
    assert info.sha256 == hashlib.sha256(body).digest()
    assert await read(store, "k") == body


# --- the CLI --------------------------------------------------------------------------------


def test_serve_azure_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from quicstore.cli.main import main

    monkeypatch.delenv("QUICSTORE_AZURE_CONNECTION_STRING", raising=False)
    base = ["serve", "--store", "azure", "--root", str(tmp_path), "--listen", "127.0.0.1:0"]
    assert main(base) == 2
    assert "--azure-connection-string" in capsys.readouterr().err
    assert main([*base, "--azure-connection-string", "nonsense"]) == 2
    assert "connection string" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                "--azure-connection-string",
                "UseDevelopmentStorage=true",
                "--azure-container-prefix",
                "Bad_",
            ]
        )
        == 2
    )
    assert "prefix" in capsys.readouterr().err
    # Without the SDK: the same clear usage error, not an ImportError traceback.
    for name in [m for m in sys.modules if m == "quicstore.store.azure" or m.startswith("azure")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "azure", None)  # type: ignore[arg-type]
    assert main([*base, "--azure-connection-string", "UseDevelopmentStorage=true"]) == 2
    assert "pip install 'quicstore[azure]'" in capsys.readouterr().err


async def test_block_ids_have_one_length_across_uploads(store: AzureStore) -> None:
    """Azure refuses a block list whose IDs differ in length, also across uploads of one
    key: every ID is 32 hex digits of upload ID and 8 of index."""
    a = await store.create("b", "k", block_size=4096)
    b = await store.create("b", "k", block_size=4096)
    ids = {a._block_id(0), a._block_id(49_999), b._block_id(7)}
    assert len(ids) == 3 and len({len(i) for i in ids}) == 1
    assert all(BlobBlock(block_id=i).id == i for i in ids)
    await a.abort()
    await b.abort()
