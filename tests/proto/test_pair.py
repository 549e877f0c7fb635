"""Every operation and error path over two real aioquic connections in memory, fake clock."""

from __future__ import annotations

import hashlib
import os

import pytest

from quicstore.auth import Authorizer, mint_token
from quicstore.proto import events as ev
from quicstore.proto.codes import ErrorCode
from quicstore.proto.integrity import RangeVerifier
from quicstore.proto.messages import RequestHeader
from quicstore.proto.settings import Settings

from ..pair import InMemoryPair

BODY = os.urandom(300_000)


def body_of(events: list[ev.Event]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, ev.DataReceived))


def verify(events: list[ev.Event]) -> bytes:
    """Check the body against the CHECKSUMS that preceded it, as a client must."""
    (response,) = [e for e in events if isinstance(e, ev.ResponseReceived)]
    h = response.header
    assert h.offset is not None and h.length is not None and h.size is not None
    assert h.block_size is not None
    verifier = RangeVerifier(offset=h.offset, length=h.length, size=h.size, block_size=h.block_size)
    for e in events:
        if isinstance(e, ev.ChecksumsReceived):
            verifier.add_checksums(e.first_block, e.checksums)
        elif isinstance(e, ev.DataReceived):
            verifier.update(e.data)
    assert verifier.complete
    return body_of(events)


def error_code(events: list[ev.Event]) -> int:
    (err,) = [e for e in events if isinstance(e, ev.ErrorReceived)]
    return err.code


@pytest.fixture
def pair() -> InMemoryPair:
    p = InMemoryPair(server_settings=Settings(block_size=4096))
    p.run_until(lambda: p.client.peer_settings_received and p.server.peer_settings_received)
    return p


def test_settings_are_exchanged(pair: InMemoryPair) -> None:
    assert pair.client.peer_settings.block_size == 4096
    assert any(isinstance(e, ev.HandshakeCompleted) for e in pair.client_events)


def test_put_get_head_delete(pair: InMemoryPair) -> None:
    put = pair.request(
        RequestHeader(
            op="PUT", bucket="b", key="a/b.bin", content_length=len(BODY), meta={"x": "1"}
        ),
        BODY,
        trailer_sha=True,
    )
    (stored,) = [e for e in put if isinstance(e, ev.ResponseReceived)]
    assert stored.header.size == len(BODY)
    assert stored.header.sha256 == hashlib.sha256(BODY).digest()
    etag = stored.header.etag

    got = pair.request(RequestHeader(op="GET", bucket="b", key="a/b.bin"))
    assert verify(got) == BODY

    head = pair.request(RequestHeader(op="HEAD", bucket="b", key="a/b.bin", checksums=True))
    (resp,) = [e for e in head if isinstance(e, ev.ResponseReceived)]
    assert resp.header.etag == etag and resp.header.meta == {"x": "1"}
    sums = [c for e in head if isinstance(e, ev.ChecksumsReceived) for c in e.checksums]
    assert len(sums) == -(-len(BODY) // 4096)
    assert not body_of(head)

    deleted = pair.request(RequestHeader(op="DELETE", bucket="b", key="a/b.bin", if_match=etag))
    assert any(isinstance(e, ev.ResponseReceived) and e.header.etag == etag for e in deleted)
    missing = pair.request(RequestHeader(op="GET", bucket="b", key="a/b.bin"))
    assert error_code(missing) == ErrorCode.QS_NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "start", "end"),
    [
        ({"offset": 0, "length": 10}, 0, 10),
        ({"offset": 150_000, "length": 4096}, 150_000, 154_096),
        ({"offset": 299_990}, 299_990, 300_000),
        ({"suffix": 5000}, 295_000, 300_000),
        ({"offset": 8192, "length": 8192}, 8192, 16384),
    ],
)
def test_ranged_get(pair: InMemoryPair, fields: dict[str, int], start: int, end: int) -> None:
    pair.responder.put_object("b", "obj", BODY)
    got = pair.request(RequestHeader(op="GET", bucket="b", key="obj", **fields))  # type: ignore[arg-type]
    assert verify(got) == BODY[start:end]


def test_parallel_ranges_on_separate_streams(pair: InMemoryPair) -> None:
    pair.responder.put_object("b", "obj", BODY)
    sids = [
        pair.client.send_request(
            RequestHeader(op="GET", bucket="b", key="obj", offset=i * 65536, length=65536)
        )
        for i in range(5)
    ]
    pair.run_until(lambda: all(pair.finished(s) for s in sids))
    assert b"".join(verify(pair.events_for(s)) for s in sids) == BODY


def test_range_past_the_end(pair: InMemoryPair) -> None:
    pair.responder.put_object("b", "obj", b"0123456789")
    got = pair.request(RequestHeader(op="GET", bucket="b", key="obj", offset=10))
    assert error_code(got) == ErrorCode.QS_RANGE_NOT_SATISFIABLE


def test_conditions(pair: InMemoryPair) -> None:
    etag = pair.responder.put_object("b", "obj", b"v1").etag
    assert error_code(
        pair.request(RequestHeader(op="GET", bucket="b", key="obj", if_match="0" * 32))
    ) == (ErrorCode.QS_PRECONDITION_FAILED)
    assert (
        error_code(pair.request(RequestHeader(op="GET", bucket="b", key="obj", if_none_match=etag)))
        == ErrorCode.QS_NOT_MODIFIED
    )
    create_only = RequestHeader(op="PUT", bucket="b", key="obj", if_none_match="*")
    assert error_code(pair.request(create_only, b"v2")) == ErrorCode.QS_PRECONDITION_FAILED
    assert pair.responder.objects[("b", "obj")].data == b"v1"


def test_list_pages(pair: InMemoryPair) -> None:
    for i in range(7):
        pair.responder.put_object("b", f"shards/{i:03d}", b"x")
    pair.responder.put_object("b", "other", b"x")
    keys: list[str] = []
    token = None
    while True:
        got = pair.request(
            RequestHeader(op="LIST", bucket="b", prefix="shards/", limit=3, continuation=token)
        )
        (listing,) = [e for e in got if isinstance(e, ev.ListingReceived)]
        keys += [entry.key for entry in listing.listing.entries]
        token = listing.listing.next
        if token is None:
            break
    assert keys == [f"shards/{i:03d}" for i in range(7)]
    bad = pair.request(RequestHeader(op="LIST", bucket="b", continuation="nonsense"))
    assert error_code(bad) == ErrorCode.QS_BAD_REQUEST


def test_put_integrity_failures_store_nothing(pair: InMemoryPair) -> None:
    wrong_sha = RequestHeader(op="PUT", bucket="b", key="k", sha256=bytes(32))
    assert error_code(pair.request(wrong_sha, b"data")) == ErrorCode.QS_INTEGRITY_ERROR
    short = RequestHeader(op="PUT", bucket="b", key="k", content_length=10)
    assert error_code(pair.request(short, b"data")) == ErrorCode.QS_INTEGRITY_ERROR
    assert ("b", "k") not in pair.responder.objects


def test_reset_put_stores_nothing(pair: InMemoryPair) -> None:
    sid = pair.client.send_request(RequestHeader(op="PUT", bucket="b", key="k"))
    pair.client.send_data(sid, b"partial")
    pair.run_until(lambda: any(isinstance(e, ev.DataReceived) for e in pair.server_events))
    pair.client.cancel_request(sid)
    pair.run_until(lambda: any(isinstance(e, ev.StreamReset) for e in pair.server_events))
    assert ("b", "k") not in pair.responder.objects and not pair.responder.uploads


def test_hostile_key_and_bad_request(pair: InMemoryPair) -> None:
    got = pair.request(RequestHeader(op="GET", bucket="b", key="../../etc/passwd"))
    assert error_code(got) == ErrorCode.QS_INVALID_KEY
    got = pair.request(RequestHeader(op="GET", bucket="b", key="k", suffix=3, offset=1))
    assert error_code(got) == ErrorCode.QS_BAD_REQUEST


def test_tokens() -> None:
    secret = b"k" * 32
    p = InMemoryPair(authorizer=Authorizer(secrets={"k1": secret}))
    p.responder.put_object("data", "x", b"hello")
    now = int(p.now)
    read = mint_token(secret, kid="k1", bucket="data", ops=["read"], now=now, ttl=60)
    assert body_of(p.request(RequestHeader(op="GET", bucket="data", key="x", token=read))) == (
        b"hello"
    )
    cases = [
        (None, ErrorCode.QS_UNAUTHENTICATED),
        ("qs1.bad.token", ErrorCode.QS_UNAUTHENTICATED),
        (
            mint_token(secret, kid="k1", bucket="data", ops=["read"], now=now - 120, ttl=60),
            ErrorCode.QS_TOKEN_EXPIRED,
        ),
        (
            mint_token(secret, kid="k1", bucket="other", ops=["read"], now=now, ttl=60),
            ErrorCode.QS_FORBIDDEN,
        ),
    ]
    for token, code in cases:
        got = p.request(RequestHeader(op="GET", bucket="data", key="x", token=token))
        assert error_code(got) == code


def test_malformed_request_keeps_connection(pair: InMemoryPair) -> None:
    from quicstore.proto.codes import FrameType
    from quicstore.proto.frames import encode_frame_header

    sid = pair.client_quic.get_next_available_stream_id()
    pair.client_quic.send_stream_data(
        sid, encode_frame_header(FrameType.REQUEST, 1) + b"\xc1", end_stream=True
    )
    pair.run_until(lambda: any(isinstance(e, ev.StreamAbandoned) for e in pair.server_events))
    pair.responder.put_object("b", "ok", b"fine")
    assert body_of(pair.request(RequestHeader(op="GET", bucket="b", key="ok"))) == b"fine"
