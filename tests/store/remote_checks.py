"""What the Azure and S3 store tests (test_azure.py, test_s3.py) check the same way, written
once: writing and reading an object in pieces, conditions, and the checks both remote stores
must pass alike (a condition re-checked after a racing writer, bucket names the service
rejects, alone and in every operation, metadata over the limit, an empty listing, metadata
round trips, trailer reads).

Each test module keeps its own tests and names; their bodies call these with the module's
store and its ``put`` and ``read`` (which write and read in pieces of the module's size)."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.proto.integrity import block_checksums, pack_checksums
from quicstore.proto.messages import RequestHeader
from quicstore.proto.semantics import check_conditions
from quicstore.store.base import ObjectInfo

Put = Callable[..., Awaitable[ObjectInfo]]
"""A test module's ``put(store, key, body, **create_kw)``."""
Read = Callable[[Any, str], Awaitable[bytes]]
"""A test module's ``read(store, key)``."""


def always(etag: str | None) -> None:
    """A condition that accepts every current version."""


def condition(**fields: str) -> Any:
    """The condition a PUT with these RequestHeader fields (``if_match``, ...) sets."""
    header = RequestHeader(op="PUT", bucket="b", key="k", **fields)  # type: ignore[arg-type]
    return lambda etag: check_conditions(header, etag)


async def put_in_pieces(
    store: Any, key: str, body: bytes, piece: int, *, block_size: int = 4096, **kw: Any
) -> ObjectInfo:
    """Store ``body`` as ``b/key``, written ``piece`` bytes at a time, unconditionally."""
    writer = await store.create("b", key, block_size=block_size, **kw)
    for i in range(0, len(body), piece):
        await writer.write([body[i : i + piece]])
    info: ObjectInfo = await writer.commit(sha256=None, content_length=None, condition=always)
    return info


async def read_in_pieces(store: Any, key: str, piece: int) -> bytes:
    """All of ``b/key``, read ``piece`` bytes at a time (every read returns some)."""
    reader = await store.open("b", key)
    try:
        out = bytearray(reader.info.size)
        pos = 0
        while pos < len(out):
            n = await reader.read_into(pos, memoryview(out)[pos : pos + piece])
            assert n > 0
            pos += n
        return bytes(out)
    finally:
        await reader.close()


async def check_commit_rechecks_when_another_writer_slips_in(
    store: Any, put: Put, read: Read, body: bytes
) -> None:
    """The check saw no object, but one appeared before the publish: the publish (If-None-
    Match: *) fails, the check runs again and refuses; the other writer's version stands.
    ``body`` picks the publish path (one request, or staged blocks or parts)."""
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([body])
    real_head = store._head
    calls = 0

    async def stale_head(bucket: str, service_bucket: str, key: str, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await put(store, "k", b"winner")  # lands between the check and the publish
            return None  # what the check saw
        return await real_head(bucket, service_bucket, key, **kw)

    store._head = stale_head
    try:
        with pytest.raises(RequestError) as exc:
            await writer.commit(
                sha256=None, content_length=None, condition=condition(if_none_match="*")
            )
    finally:
        store._head = real_head
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert calls >= 2
    assert await read(store, "k") == b"winner"


async def check_commit_rechecks_an_if_match(store: Any, put: Put, read: Read, size: int) -> None:
    """An upload of ``size`` bytes whose If-Match version was replaced while it was written
    is refused; the replacement stands."""
    v1 = await put(store, "k", b"one")
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([os.urandom(size)])
    await put(store, "k", b"two")  # the version the client matched is gone
    with pytest.raises(RequestError) as exc:
        await writer.commit(sha256=None, content_length=None, condition=condition(if_match=v1.etag))
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert await read(store, "k") == b"two"


async def check_delete_rechecks_when_the_object_changed(store: Any, put: Put, read: Read) -> None:
    """The object is replaced after the delete's check: the conditional delete fails, the
    check runs again and refuses; the replacement stands."""
    v1 = await put(store, "k", b"one")
    real_head = store._head
    calls = 0

    async def stale_head(bucket: str, service_bucket: str, key: str, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        seen = await real_head(bucket, service_bucket, key, **kw)
        if calls == 1:
            await put(store, "k", b"two")  # replaced after the check
        return seen

    store._head = stale_head
    header = RequestHeader(op="DELETE", bucket="b", key="k", if_match=v1.etag)
    try:
        with pytest.raises(RequestError) as exc:
            await store.delete("b", "k", lambda e: check_conditions(header, e))
    finally:
        store._head = real_head
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert await read(store, "k") == b"two"


async def check_rejected_buckets_are_invalid_keys_everywhere(
    store: Any, buckets: tuple[str, ...]
) -> None:
    """Every operation on a bucket the service cannot name is QS_INVALID_KEY."""
    for bucket in buckets:
        calls = [
            store.stat(bucket, "k"),
            store.open(bucket, "k"),
            store.create(bucket, "k", block_size=4096),
            store.delete(bucket, "k", always),
            store.list(bucket),
        ]
        for call in calls:
            with pytest.raises(RequestError) as exc:
                await call
            assert exc.value.code == ErrorCode.QS_INVALID_KEY


def check_bucket_name_refused(
    name_of: Callable[[str, str], str], bucket: str, service: str
) -> None:
    """``name_of("", bucket)``, the service's name for ``bucket`` without a prefix, is
    refused with QS_INVALID_KEY saying the bucket cannot be stored in ``service``."""
    with pytest.raises(RequestError) as exc:
        name_of("", bucket)
    assert exc.value.code == ErrorCode.QS_INVALID_KEY
    assert f"cannot be stored in {service}" in exc.value.reason


async def check_metadata_over_the_limit_is_refused(store: Any, limit: int) -> None:
    """Meta longer than the service's ``limit`` is refused when the upload starts."""
    with pytest.raises(RequestError) as exc:
        await store.create("b", "k", block_size=4096, meta={"m": "x" * limit})
    assert exc.value.code == ErrorCode.QS_METADATA_TOO_LARGE


async def check_list_of_a_bucket_never_written_is_empty(store: Any) -> None:
    """A bucket nothing was written to lists as one empty, final page."""
    page = await store.list("never")
    assert page.entries == [] and page.prefixes == [] and page.next is None


async def check_metadata_round_trip(store: Any, put: Put) -> tuple[bytes, ObjectInfo]:
    """A 100,000-byte ``dir/k`` with a content type and non-ASCII meta reads back the same
    through stat and list; returns its body and info, for what the service itself shows."""
    body = os.urandom(100_000)
    meta = {"epoch": "3", "ключ": "значение ✓", "Key With Spaces": ""}
    info = await put(store, "dir/k", body, content_type="application/x-tar", meta=meta)
    assert await store.stat("b", "dir/k") == info
    assert info.meta == meta and info.content_type == "application/x-tar"
    [listed] = (await store.list("b", prefix="dir/")).entries
    assert listed == info
    return body, info


def inline_checksums(body: bytes) -> str:
    """The inline checksum metadata value of ``body`` at 4096-byte blocks."""
    packed = pack_checksums(block_checksums(body, 4096))
    return "inline:" + base64.b64encode(packed).decode()


async def check_trailer_reads(
    store: Any, read: Read, info: ObjectInfo, body: bytes, sums: list[int], at: int
) -> Any:
    """An object ``k`` whose checksums ``sums`` are in a trailer: stat, the body (never a
    byte of the trailer), all checksums and three from block ``at``. Returns the reader
    used, still open: the caller closes it."""
    assert await store.stat("b", "k") == info
    assert await read(store, "k") == body  # never a byte of the trailer
    reader = await store.open("b", "k")
    assert await reader.read_checksums(0, len(sums) + 10) == pack_checksums(sums)
    assert await reader.read_checksums(at, 3) == pack_checksums(sums[at : at + 3])
    return reader
