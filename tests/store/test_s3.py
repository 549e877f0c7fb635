"""What only the S3 store does (quicstore/store/s3.py), against moto's S3 server: the multipart
path and its footer, pinned reads on replace, aborted and failed uploads that leave neither
an object nor a pending upload, metadata, trailer and footer round trips, foreign and broken
objects, bucket names S3 rejects, conditional commits and deletes re-checked after a racing
writer, an unreachable service, a gateway over S3 end to end, and the CLI's ``serve --store
s3`` usage errors. The Store contract itself is test_conformance.py's."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.proto.integrity import block_checksums, pack_checksums
from quicstore.store.base import ObjectInfo

from .motoserver import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
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
    condition,
    inline_checksums,
    put_in_pieces,
    read_in_pieces,
)

pytest.importorskip("aiobotocore", reason="the 's3' extra is not installed")

from quicstore.store import s3 as s3_module
from quicstore.store.s3 import (
    FOOTER,
    METADATA_LIMIT,
    MIN_PART_SIZE,
    S3Store,
    S3StoreConfig,
    s3_bucket_name,
)

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
async def store(moto_server: MotoServer) -> AsyncIterator[S3Store]:
    """Multipart from 5 MiB (S3's smallest part), so that the tests' bodies stay small."""
    s = await S3Store.connect(moto_server.config(part_size=MIN_PART_SIZE))
    yield s
    await s.close()


@pytest.fixture
async def raw(moto_server: MotoServer) -> AsyncIterator[Any]:
    """A plain aiobotocore client, to look at what the store left in S3."""
    async with s3_module._session().create_client(
        "s3",
        endpoint_url=moto_server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ) as client:
        yield client


def s3_name(store: S3Store, bucket: str = "b") -> str:
    return store.s3_bucket_name(bucket)


async def put(store: S3Store, key: str, body: bytes, **kw: Any) -> ObjectInfo:
    """Store ``body`` as ``b/key`` in writes of 256 KiB."""
    return await put_in_pieces(store, key, body, 256 * KIB, **kw)


async def read(store: S3Store, key: str) -> bytes:
    """All of ``b/key``, in reads of 256 KiB."""
    return await read_in_pieces(store, key, 256 * KIB)


async def pending_uploads(raw: Any, bucket: str) -> list[str]:
    listed = await raw.list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


# --- the multipart path ---------------------------------------------------------------------


async def test_large_object_is_a_multipart_upload_with_a_footer(store: S3Store, raw: Any) -> None:
    body = os.urandom(2 * MIN_PART_SIZE + 123_457)  # two full parts and a tail
    meta = {"epoch": "3"}
    info = await put(store, "big", body, block_size=65536, content_type="x/y", meta=meta)
    assert info.sha256 == hashlib.sha256(body).digest() and info.size == len(body)
    bucket = s3_name(store)
    head = await raw.head_object(Bucket=bucket, Key="big")
    sums = block_checksums(body, 65536)
    assert head["Metadata"]["qs-checksums"] == "footer"
    assert "-3" in head["ETag"]  # S3's multipart ETag: three parts
    assert head["ContentLength"] == len(body) + 4 * len(sums) + FOOTER.size
    assert head["ContentType"] == "x/y"
    assert await pending_uploads(raw, bucket) == []
    assert await store.stat("b", "big") == info
    [listed] = (await store.list("b")).entries
    assert listed == info
    assert await read(store, "big") == body
    reader = await store.open("b", "big")
    assert await reader.read_checksums(0, len(sums) + 5) == pack_checksums(sums)
    assert await reader.read_checksums(80, 3) == pack_checksums(sums[80:83])
    assert await reader.read_into(len(body), memoryview(bytearray(10))) == 0
    await reader.close()
    # Any S3 client reading the first qs-size bytes gets exactly the object.
    got = await raw.get_object(Bucket=bucket, Key="big", Range=f"bytes=0-{len(body) - 1}")
    assert await got["Body"].read() == body


async def test_body_of_exactly_whole_parts(store: S3Store) -> None:
    body = os.urandom(MIN_PART_SIZE)  # one full part; checksums and footer are the last part
    await put(store, "k", body)
    assert await read(store, "k") == body


async def test_read_ahead_serves_contiguous_reads_with_few_requests(
    moto_server: MotoServer,
) -> None:
    store = await S3Store.connect(moto_server.config(read_ahead=4 * MIB))
    try:
        body = os.urandom(6 * MIB)
        await put(store, "k", body, block_size=65536)
        reader = await store.open("b", "k")
        sizes: list[int] = []
        real = reader._download_into

        async def counting(offset: int, buffer: memoryview, what: str) -> int:
            sizes.append(len(buffer))
            return await real(offset, buffer, what)

        reader._download_into = counting  # type: ignore[method-assign]
        out = bytearray(4 * MIB)
        pos = 0
        while pos < len(out):
            pos += await reader.read_into(MIB + pos, memoryview(out)[pos : pos + 256 * KIB])
        await reader.close()
        assert bytes(out) == body[MIB : 5 * MIB]
        assert [n // KIB for n in sizes] == [256, 256, 512, 1024, 2048]
    finally:
        await store.close()


# --- reads pin one version ----------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, MIN_PART_SIZE + 1000])
async def test_reader_fails_cleanly_once_its_object_is_replaced(store: S3Store, size: int) -> None:
    old = os.urandom(size)
    await put(store, "k", old)
    reader = await store.open("b", "k")
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < 100_000:
        got += await reader.read_into(got, view[got : got + 20_000])
    await put(store, "k", os.urandom(size))
    with pytest.raises(RequestError) as exc:
        while got < size:
            n = await reader.read_into(got, view[got : got + 20_000])
            assert n > 0
            got += n
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert "replaced" in exc.value.reason
    assert buf[:got] == old[:got]  # only the old version's bytes, never the new one's
    await reader.close()
    reader = await store.open("b", "k")
    await store.delete("b", "k", always)
    with pytest.raises(RequestError) as exc:
        await reader.read_into(0, memoryview(bytearray(10)))
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert "deleted" in exc.value.reason
    await reader.close()


# --- writes leave nothing behind unless committed ---------------------------------------------


async def test_abort_leaves_no_object_and_no_pending_upload(store: S3Store, raw: Any) -> None:
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([os.urandom(MIN_PART_SIZE + 1000)])  # one part sent, a tail pending
    assert writer.upload_id is not None
    bucket = s3_name(store)
    assert await pending_uploads(raw, bucket) == ["k"]  # really a multipart upload in S3
    with pytest.raises(RequestError) as exc:
        await store.stat("b", "k")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    assert (await store.list("b")).entries == []
    await writer.abort()
    await writer.abort()  # idempotent
    assert await pending_uploads(raw, bucket) == []
    assert (await raw.list_objects_v2(Bucket=bucket)).get("Contents", []) == []
    with pytest.raises(RequestError):
        await store.stat("b", "k")


async def test_a_failed_commit_leaves_no_object_and_no_pending_upload(
    store: S3Store, raw: Any
) -> None:
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([os.urandom(MIN_PART_SIZE + 1000)])
    with pytest.raises(RequestError) as exc:
        await writer.commit(sha256=bytes(32), content_length=None, condition=always)
    assert exc.value.code == ErrorCode.QS_INTEGRITY_ERROR
    assert await pending_uploads(raw, s3_name(store)) == []
    with pytest.raises(RequestError):
        await store.stat("b", "k")
    # Refused by the condition: the same.
    await put(store, "k", b"there")
    writer = await store.create("b", "k", block_size=4096)
    await writer.write([os.urandom(MIN_PART_SIZE + 1000)])
    with pytest.raises(RequestError) as exc:
        await writer.commit(
            sha256=None, content_length=None, condition=condition(if_none_match="*")
        )
    assert exc.value.code == ErrorCode.QS_PRECONDITION_FAILED
    assert await pending_uploads(raw, s3_name(store)) == []
    assert await read(store, "k") == b"there"


async def test_two_multipart_uploads_of_one_key_leave_one_whole(store: S3Store) -> None:
    """Unlike Azure's staged blocks, S3's multipart uploads of one key are independent: both
    commit, and the key holds one of them whole."""
    first, second = os.urandom(MIN_PART_SIZE + 10), os.urandom(MIN_PART_SIZE + 20)
    a = await store.create("b", "k", block_size=4096)
    b = await store.create("b", "k", block_size=4096)
    await a.write([first])
    await b.write([second])
    await asyncio.gather(
        a.commit(sha256=None, content_length=None, condition=always),
        b.commit(sha256=None, content_length=None, condition=always),
    )
    assert await read(store, "k") in (first, second)


# --- what an object keeps -------------------------------------------------------------------


async def test_metadata_round_trip_and_what_s3_sees(store: S3Store, raw: Any) -> None:
    body, info = await check_metadata_round_trip(store, put)
    head = await raw.head_object(Bucket=s3_name(store), Key="dir/k")
    md = head["Metadata"]
    assert head["ContentLength"] == len(body)  # the S3 object is exactly the object
    assert head["ContentType"] == "application/x-tar"
    assert md["qs-sha256"] == hashlib.sha256(body).hexdigest()
    assert md["qs-size"] == "100000" and md["qs-block-size"] == "4096"
    assert md["qs-mtime-ns"] == str(info.mtime_ns)
    assert md["qs-checksums"] == inline_checksums(body)


async def test_checksums_past_the_metadata_limit_go_to_a_trailer(store: S3Store, raw: Any) -> None:
    body = os.urandom(50_003)  # 3,126 blocks of 16 bytes: 12 KiB of checksums
    info = await put(store, "k", body, block_size=16)
    head = await raw.head_object(Bucket=s3_name(store), Key="k")
    assert head["Metadata"]["qs-checksums"] == "trailer"
    sums = block_checksums(body, 16)
    assert head["ContentLength"] == len(body) + 4 * len(sums)
    reader = await check_trailer_reads(store, read, info, body, sums, 3000)
    await reader.close()


async def test_metadata_over_s3s_limit_is_refused_before_any_byte(store: S3Store) -> None:
    await check_metadata_over_the_limit_is_refused(store, METADATA_LIMIT)


async def test_objects_not_written_by_quicstore_are_not_objects(store: S3Store, raw: Any) -> None:
    await put(store, "mine", b"x")
    bucket = s3_name(store)
    await raw.put_object(Bucket=bucket, Key="foreign", Body=b"no checksums")
    with pytest.raises(RequestError) as exc:
        await store.stat("b", "foreign")
    assert exc.value.code == ErrorCode.QS_NOT_FOUND
    # Broken quicstore metadata: a clean internal error, and left out of listings.
    await raw.put_object(
        Bucket=bucket, Key="broken", Body=b"abc", Metadata={"qs-format": "1", "qs-size": "x"}
    )
    await raw.put_object(
        Bucket=bucket,
        Key="badfooter",
        Body=b"y" * 100,
        Metadata={"qs-format": "1", "qs-block-size": "4096", "qs-checksums": "footer"},
    )
    for key in ("broken", "badfooter"):
        with pytest.raises(RequestError) as exc:
            await store.open("b", key)
        assert exc.value.code == ErrorCode.QS_INTERNAL_ERROR
    assert [e.key for e in (await store.list("b")).entries] == ["mine"]


# --- names and configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket", ["a_b", "Ab", "ab-", "a..b", "1.2.3.4", "xn--ab", "abc-s3alias", "a" * 64, "ab"]
)
def test_bucket_naming_rule(bucket: str) -> None:
    check_bucket_name_refused(s3_bucket_name, bucket, "S3")


def test_bucket_names_that_work() -> None:
    assert s3_bucket_name("", "data") == "data"
    assert s3_bucket_name("qs-", "b") == "qs-b"
    assert s3_bucket_name("team.qs-", "x.y") == "team.qs-x.y"


async def test_bucket_names_s3_rejects_get_invalid_key_everywhere(
    moto_server: MotoServer,
) -> None:
    store = await S3Store.connect(moto_server.config(bucket_prefix=""))
    try:
        await check_rejected_buckets_are_invalid_keys_everywhere(store, ("ab", "under_score"))
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"bucket_prefix": "Qs-"}, "prefix"),
        ({"bucket_prefix": "-x"}, "prefix"),
        ({"bucket_prefix": "x" * 63}, "prefix"),
        ({"endpoint_url": "127.0.0.1:9000"}, "endpoint URL"),
        ({"endpoint_url": "ftp://host"}, "endpoint URL"),
        ({"region": "us east"}, "region"),
        ({"part_size": MIN_PART_SIZE - 1}, "part size"),
        ({"access_key_id": "only-the-id"}, "credentials"),
    ],
)
def test_bad_configuration_is_a_value_error(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        S3Store(S3StoreConfig(**fields))


# --- conditions are checked against the version published over ----------------------------------


async def test_the_server_refuses_conditional_writes_that_do_not_match(
    store: S3Store, raw: Any
) -> None:
    """What the store's race-freedom rests on, asked of the server directly: If-None-Match
    and If-Match on PutObject, If-None-Match on CompleteMultipartUpload and If-Match on
    DeleteObject are refused with 412 when they do not match. (moto ignores If-Match on
    CompleteMultipartUpload; the store re-checks just before completing: see s3.py.)"""
    from botocore.exceptions import ClientError

    await put(store, "k", b"v1")
    bucket = s3_name(store)
    wrong = '"00000000000000000000000000000000"'
    attempts = [
        raw.put_object(Bucket=bucket, Key="k", Body=b"x", IfNoneMatch="*"),
        raw.put_object(Bucket=bucket, Key="k", Body=b"x", IfMatch=wrong),
        raw.delete_object(Bucket=bucket, Key="k", IfMatch=wrong),
    ]
    upload = await raw.create_multipart_upload(Bucket=bucket, Key="k")
    part = await raw.upload_part(
        Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )
    attempts.append(
        raw.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            IfNoneMatch="*",
        )
    )
    for attempt in attempts:
        with pytest.raises(ClientError) as exc:
            await attempt
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    await raw.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"])
    assert await read(store, "k") == b"v1"


@pytest.mark.parametrize("size", [5, MIN_PART_SIZE + 5], ids=["put", "multipart"])
async def test_commit_rechecks_when_another_writer_slips_in(store: S3Store, size: int) -> None:
    """The check saw no object, but one appeared before the publish: the publish (If-None-
    Match: *, on PutObject or CompleteMultipartUpload) fails, the check runs again and
    refuses; the other writer's version stands."""
    await check_commit_rechecks_when_another_writer_slips_in(store, put, read, b"l" * size)


async def test_multipart_commit_rechecks_an_if_match(store: S3Store) -> None:
    await check_commit_rechecks_an_if_match(store, put, read, MIN_PART_SIZE + 5)


async def test_delete_rechecks_when_the_object_changed(store: S3Store) -> None:
    await check_delete_rechecks_when_the_object_changed(store, put, read)


# --- listing --------------------------------------------------------------------------------


async def test_list_of_a_bucket_never_written_is_empty(store: S3Store) -> None:
    await check_list_of_a_bucket_never_written_is_empty(store)


async def test_list_pages_mix_small_and_multipart_objects(store: S3Store) -> None:
    big = os.urandom(MIN_PART_SIZE + 1)
    await put(store, "d/big", big)
    for name in ("d/a", "d/z", "d/sub/x", "e"):
        await put(store, name, b"x")
    seen: list[str] = []
    prefixes: list[str] = []
    token = None
    while True:
        page = await store.list("b", prefix="d/", delimiter="/", continuation=token, limit=1)
        seen += [e.key for e in page.entries]
        prefixes += page.prefixes
        assert len(page.entries) + len(page.prefixes) <= 1
        token = page.next
        if token is None:
            break
    assert seen == ["d/a", "d/big", "d/z"] and prefixes == ["d/sub/"]
    sizes = {e.key: e.size for e in (await store.list("b", prefix="d/")).entries}
    assert sizes["d/big"] == len(big)


# --- the service failing -------------------------------------------------------------------


async def test_unreachable_service(moto_server: MotoServer) -> None:
    config = moto_server.config(endpoint_url="http://127.0.0.1:9", retries=0)
    with pytest.raises(ConnectionError, match="did not accept a request"):
        await S3Store.connect(config)
    store = S3Store(config)
    await store.start()
    try:
        for call in (store.stat("b", "k"), store.list("b"), store.delete("b", "k", always)):
            with pytest.raises(RequestError) as exc:
                await call
            assert exc.value.code == ErrorCode.QS_UNAVAILABLE
    finally:
        await store.close()


# --- a gateway over S3, and the CLI -----------------------------------------------------------


def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing in this process's environment or files gives botocore credentials (and it
    never asks the instance metadata service)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setattr(s3_module, "_SESSION", None)  # no credentials cached


async def test_gateway_over_s3_end_to_end(
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from quicstore.client.client import Client
    from quicstore.server.app import start_gateway
    from quicstore.server.config import GatewayConfig

    no_aws_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)  # the standard chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    config = GatewayConfig(
        root=tmp_path / "gw",
        port=0,
        open_access=True,
        store="s3",
        s3_endpoint_url=moto_server.endpoint_url,
        s3_bucket_prefix=moto_server.config().bucket_prefix,
        s3_region=REGION,
    )
    running = await start_gateway(config)
    try:
        async with Client(running.url, ca_file=running.tls.cert_file) as client:
            small, big = os.urandom(70_000), os.urandom(MIN_PART_SIZE + 7)
            await client.put("data", "small", small)
            await client.put("data", "big", big)
            assert await client.get("data", "small") == small
            assert await client.get("data", "big") == big
            listed = [o.key async for page in client.list("data") for o in page.entries]
            assert listed == ["big", "small"]
    finally:
        await running.stop(drain_timeout=2)


def test_serve_s3_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from quicstore.cli.main import main

    no_aws_credentials(monkeypatch, tmp_path)
    base = ["serve", "--store", "s3", "--root", str(tmp_path / "gw"), "--listen", "127.0.0.1:0"]
    assert main([*base, "--s3-bucket-prefix", "Bad_"]) == 2
    assert "prefix" in capsys.readouterr().err
    assert main([*base, "--s3-endpoint-url", "localhost:9000"]) == 2
    assert "endpoint URL" in capsys.readouterr().err
    assert main([*base, "--s3-region", "not a region"]) == 2
    assert "region" in capsys.readouterr().err
    # No credentials anywhere: a usage error naming what to set (found at connect).
    assert main([*base, "--s3-endpoint-url", "http://127.0.0.1:9"]) == 2
    assert "AWS_ACCESS_KEY_ID" in capsys.readouterr().err
    # Credentials but no service answering: the network exit code.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main([*base, "--s3-endpoint-url", "http://127.0.0.1:9"]) == 5
    assert "did not accept a request" in capsys.readouterr().err
    # Without aiobotocore: the same clear usage error, not an ImportError traceback.
    for name in [
        m for m in sys.modules if m == "quicstore.store.s3" or m.startswith("aiobotocore")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiobotocore", None)  # type: ignore[arg-type]
    assert main(base) == 2
    assert "pip install 'quicstore[s3]'" in capsys.readouterr().err
