"""The HTTP/3 front end (spec/quicstore-h3.md) against the same store as quicstore/1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quicstore.auth import mint_token
from quicstore.client.client import Client
from quicstore.client.http3 import Http3Client
from quicstore.proto.integrity import block_checksums, pack_checksums
from quicstore.proto.settings import Settings
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.server.state import active_secret

BODY = os.urandom(1_000_003)


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, Client, Http3Client]]:
    running = await start_gateway(
        GatewayConfig(
            root=tmp_path / "gw",
            port=0,
            open_access=True,
            protocols=("quicstore/1", "h3", "hq-interop"),
            settings=Settings(max_object_size=5_000_000),
        )
    )
    native = Client(running.url, ca_file=running.tls.cert_file)
    h3 = await Http3Client.connect(
        "127.0.0.1", running.port, ca_file=running.tls.cert_file, server_name="localhost"
    )
    yield running, native, h3
    await h3.close()
    await native.close()
    await running.stop(drain_timeout=1)


async def test_native_and_h3_return_identical_bytes_etags_and_checksums(
    both: tuple[RunningGateway, Client, Http3Client],
) -> None:
    _, native, h3 = both
    info = await native.put("data", "same", BODY)
    via_h3 = await h3.get("/data/same", headers=[("x-quicstore-want-checksums", "1")])
    assert via_h3.status == 200 and via_h3.body == BODY
    assert via_h3.headers["etag"] == f'"{info.etag}"'
    assert via_h3.headers["x-quicstore-sha256"] == info.sha256.hex()
    assert via_h3.headers["content-length"] == str(len(BODY))
    assert via_h3.headers["x-quicstore-checksums-first-block"] == "0"
    packed = base64.b64decode(via_h3.headers["x-quicstore-checksums"])
    assert packed == pack_checksums(block_checksums(BODY, 65536))
    assert bytes(await native.get("data", "same")) == via_h3.body
    # and the other way round: an h3 PUT read natively
    put = await h3.request(
        "PUT",
        "/data/from-h3",
        body=BODY,
        headers=[("x-quicstore-sha256", hashlib.sha256(BODY).hexdigest())],
    )
    assert put.status == 201
    stat = await native.stat("data", "from-h3")
    assert put.headers["etag"] == f'"{stat.etag}"' and stat.etag == info.etag


async def test_ranges(both: tuple[RunningGateway, Client, Http3Client]) -> None:
    _, native, h3 = both
    await native.put("data", "r", BODY)
    size = len(BODY)
    cases = [
        ("bytes=0-99", 206, 0, 100),
        ("bytes=999990-", 206, 999990, size),
        ("bytes=-10", 206, size - 10, size),
        ("bytes=10-5", 200, 0, size),
        ("items=0-1", 200, 0, size),
        ("bytes=5-9, 20-29", 206, 5, 10),
    ]
    for value, status, lo, hi in cases:
        r = await h3.get("/data/r", headers=[("range", value)])
        assert (r.status, r.body) == (status, BODY[lo:hi]), value
        if status == 206:
            assert r.headers["content-range"] == f"bytes {lo}-{hi - 1}/{size}"
    for value in ("bytes=2000000-", "bytes=-0"):
        r = await h3.get("/data/r", headers=[("range", value)])
        assert r.status == 416 and r.headers["content-range"] == f"bytes */{size}"
        assert json.loads(r.body)["code"] == "QS_RANGE_NOT_SATISFIABLE"
    etag = (await h3.request("HEAD", "/data/r")).headers["etag"]
    kept = await h3.get("/data/r", headers=[("range", "bytes=0-9"), ("if-range", etag)])
    stale = await h3.get("/data/r", headers=[("range", "bytes=0-9"), ("if-range", '"old"')])
    assert (kept.status, len(kept.body)) == (206, 10)
    assert (stale.status, len(stale.body)) == (200, size)


async def test_conditions_put_delete_and_list(
    both: tuple[RunningGateway, Client, Http3Client],
) -> None:
    _, native, h3 = both
    first = await h3.request("PUT", "/data/c/1", body=b"one")
    etag = first.headers["etag"]
    assert first.status == 201
    assert (
        await h3.request("PUT", "/data/c/1", body=b"x", headers=[("if-none-match", "*")])
    ).status == 412
    assert (
        await h3.request("PUT", "/data/c/1", body=b"two", headers=[("if-match", f'"nope", {etag}')])
    ).status == 204
    assert (await h3.get("/data/c/1", headers=[("if-none-match", '"zz", W/"zz"')])).status == 200
    new_etag = (await h3.request("HEAD", "/data/c/1")).headers["etag"]
    not_modified = await h3.get("/data/c/1", headers=[("if-none-match", new_etag)])
    assert not_modified.status == 304 and not_modified.body == b""
    bad_digest = await h3.request(
        "PUT", "/data/c/2", body=b"data", headers=[("x-quicstore-sha256", "0" * 64)]
    )
    assert bad_digest.status == 422
    for i in range(5):
        await native.put("data", f"c/d/{i}", b"z")
    page = await h3.get("/data/?prefix=c/&delimiter=/&limit=2")
    listing = json.loads(page.body)
    assert page.status == 200 and listing["entries"][0]["key"] == "c/1"
    assert listing["prefixes"] == ["c/d/"] and "next" not in listing
    page = await h3.get("/data/?prefix=c/d/&limit=2")
    assert len(json.loads(page.body)["entries"]) == 2 and "next" in json.loads(page.body)
    assert (await h3.get("/data/?delimeter=/")).status == 400  # misspelt: refused
    deleted = await h3.request("DELETE", "/data/c/1")
    assert deleted.status == 204 and deleted.headers["x-quicstore-deleted-etag"] == new_etag
    assert (await h3.request("DELETE", "/data/c/1")).status == 404
    assert (await h3.request("POST", "/data/c/1")).headers["allow"] == "GET, HEAD, PUT, DELETE"


async def test_names_limits_and_the_service_document(
    both: tuple[RunningGateway, Client, Http3Client],
) -> None:
    _, _, h3 = both
    for path, status in (
        ("/data/a/../b", 400),
        ("/data/a//b", 400),
        ("/data/..%2Fetc", 400),
        ("/data/" + "k" * 1100, 414),
        ("/BadBucket/k", 400),
    ):
        r = await h3.get(path)
        assert r.status == status, path
        assert r.headers["x-quicstore-error"] in ("QS_INVALID_KEY", "QS_KEY_TOO_LONG")
    big = await h3.request("PUT", "/data/big", body=b"x" * 5_000_001)
    assert big.status == 413
    meta = await h3.request(
        "PUT", "/data/m", body=b"x", headers=[("x-quicstore-meta-huge", "v" * 9000)]
    )
    assert meta.status == 431
    doc = json.loads((await h3.get("/")).body)
    assert doc["protocol"] == "quicstore/1" and doc["max_object_size"] == 5_000_000


async def test_bearer_tokens(tmp_path: Path) -> None:
    running = await start_gateway(GatewayConfig(root=tmp_path, port=0))
    kid, secret = active_secret(tmp_path, None)
    now = int(time.time())
    reader = mint_token(secret, kid=kid, bucket="data", ops=["read"], now=now, ttl=60)
    expired = mint_token(secret, kid=kid, bucket="data", ops=["read"], now=now - 100, ttl=1)
    h3 = await Http3Client.connect(
        "127.0.0.1", running.port, ca_file=running.tls.cert_file, server_name="localhost"
    )
    try:
        missing = await h3.get("/data/k")
        assert missing.status == 401 and missing.headers["www-authenticate"] == "Bearer"
        bad = await h3.get("/data/k", headers=[("authorization", "Bearer qs1.x.y")])
        assert bad.status == 401 and "invalid_token" in bad.headers["www-authenticate"]
        old = await h3.get("/data/k", headers=[("authorization", f"Bearer {expired}")])
        assert old.status == 401 and "token expired" in old.headers["www-authenticate"]
        assert json.loads(old.body)["code"] == "QS_TOKEN_EXPIRED"
        ok = await h3.get("/data/k", headers=[("authorization", f"Bearer {reader}")])
        assert ok.status == 404  # authorised, and only then the existence check
        denied = await h3.request(
            "PUT", "/data/k", body=b"x", headers=[("authorization", f"Bearer {reader}")]
        )
        assert denied.status == 403 and "insufficient_scope" in denied.headers["www-authenticate"]
    finally:
        await h3.close()
        await running.stop(drain_timeout=1)


async def test_hq_interop_with_a_root_bucket(tmp_path: Path) -> None:
    running = await start_gateway(
        GatewayConfig(
            root=tmp_path,
            port=0,
            open_access=True,
            protocols=("hq-interop", "h3"),
            h3_root_bucket="www",
        )
    )
    try:
        h3 = await Http3Client.connect(
            "127.0.0.1", running.port, ca_file=running.tls.cert_file, server_name="localhost"
        )
        assert (await h3.request("PUT", "/file.bin", body=BODY)).status == 201
        await h3.close()
        hq = await Http3Client.connect(
            "127.0.0.1",
            running.port,
            alpn="hq-interop",
            ca_file=running.tls.cert_file,
            server_name="localhost",
        )
        got = await hq.get("/file.bin")
        assert got.body == BODY
        await hq.close()
    finally:
        await running.stop(drain_timeout=1)


async def test_unsafe_requests_in_early_data_are_too_early(
    both: tuple[RunningGateway, Client, Http3Client],
) -> None:
    running, native, h3 = both
    await native.put("data", "early", b"before")
    ticket = await h3.wait_for_ticket()
    assert ticket is not None
    resumed = await Http3Client.connect(
        "127.0.0.1",
        running.port,
        ca_file=running.tls.cert_file,
        server_name="localhost",
        session_ticket=ticket,
        wait_handshake=False,
    )
    try:
        put, get = await asyncio.gather(
            resumed.request("PUT", "/data/early", body=b"replayable?"),
            resumed.get("/data/early"),
        )
        assert put.status == 425 and put.headers["x-quicstore-error"] == "QS_TOO_EARLY"
        assert get.status == 200 and get.body == b"before"  # safe: served from 0-RTT
        assert resumed.handshake is not None and resumed.handshake.early_data_accepted
    finally:
        await resumed.close()
    assert bytes(await native.get("data", "early")) == b"before"
