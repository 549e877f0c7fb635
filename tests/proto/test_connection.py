"""The connection layer (quicstore.proto.connection) over a recording fake QUIC."""

from __future__ import annotations

import pytest
from aioquic.quic import events as qe
from hypothesis import given, settings
from hypothesis import strategies as st

from quicstore.proto import events as ev
from quicstore.proto.codes import ErrorCode, FrameType, StreamType
from quicstore.proto.connection import QuicstoreConnection
from quicstore.proto.errors import LocalProtocolError
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import (
    ChecksumsFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    GoawayFrame,
    RequestFrame,
    ResponseFrame,
    SettingsFrame,
    TrailerFrame,
    encode_frame,
    encode_frame_header,
)
from quicstore.proto.messages import Listing, RequestHeader, ResponseHeader, Trailer
from quicstore.proto.settings import Settings
from quicstore.proto.varint import encode_varint

from ..fakes import FakeQuic

GET = RequestHeader(op="GET", bucket="b", key="k")
CONTROL = encode_varint(StreamType.CONTROL) + encode_frame(Settings().to_frame())


def make(is_client: bool, **kw: object) -> tuple[QuicstoreConnection, FakeQuic]:
    quic = FakeQuic(is_client=is_client)
    conn = QuicstoreConnection(quic, is_client=is_client, grease=False, **kw)  # type: ignore[arg-type]
    quic.take()
    return conn, quic


def data(conn: QuicstoreConnection, sid: int, payload: bytes, fin: bool = False) -> list[ev.Event]:
    return conn.handle_event(qe.StreamDataReceived(data=payload, end_stream=fin, stream_id=sid))


def frames_of(wire: bytes) -> list[Frame]:
    return FrameReader(1 << 24).feed(wire)


def test_constructor_opens_the_control_stream_with_settings() -> None:
    quic = FakeQuic(is_client=True)
    QuicstoreConnection(quic, is_client=True, settings=Settings(block_size=1 << 20))
    wire, fin = quic.stream_bytes(2)
    assert not fin
    assert wire[0] == StreamType.CONTROL
    first, grease = frames_of(wire[1:])
    assert isinstance(first, SettingsFrame)
    assert Settings.from_frame(first).block_size == 1 << 20
    assert grease.frame_type == 0x1F * 2 + 0x21  # type: ignore[union-attr]


def test_client_get_then_response_body() -> None:
    client, quic = make(True)
    sid = client.send_request(GET)
    assert sid == 0
    wire, fin = quic.stream_bytes(0)
    assert fin and frames_of(wire) == [RequestFrame(GET)]
    body = encode_frame(ResponseFrame(ResponseHeader(size=3, offset=0, length=3)))
    body += encode_frame(ChecksumsFrame(0, (7,))) + encode_frame(DataFrame(b"abc"))
    events = data(client, 0, body, fin=True)
    assert [type(e) for e in events] == [
        ev.ResponseReceived,
        ev.ChecksumsReceived,
        ev.DataReceived,
        ev.StreamEnded,
    ]
    assert client.open_request_count == 0


def test_client_rejects_body_longer_than_announced() -> None:
    client, quic = make(True)
    client.send_request(GET)
    body = encode_frame(ResponseFrame(ResponseHeader(offset=0, length=2))) + encode_frame(
        DataFrame(b"abc")
    )
    events = data(client, 0, body)
    assert isinstance(events[-1], ev.StreamAbandoned)
    assert events[-1].code == ErrorCode.QS_MESSAGE_ERROR
    assert quic.stops == [(0, ErrorCode.QS_MESSAGE_ERROR)]


def test_client_rejects_short_body_at_fin() -> None:
    client, _ = make(True)
    client.send_request(GET)
    body = encode_frame(ResponseFrame(ResponseHeader(offset=0, length=5)))
    events = data(client, 0, body + encode_frame(DataFrame(b"ab")), fin=True)
    assert isinstance(events[-1], ev.StreamAbandoned)


def test_server_receives_request_and_answers() -> None:
    server, quic = make(False)
    events = data(server, 0, encode_frame(RequestFrame(GET)), fin=True)
    assert events == [ev.RequestReceived(stream_id=0, header=GET), ev.StreamEnded(stream_id=0)]
    assert server.send_response(0, ResponseHeader(size=4, offset=0, length=4))
    assert server.send_checksums(0, 0, [1])
    assert server.send_data(0, b"abcd", end_stream=True)
    wire, fin = quic.stream_bytes(0)
    assert fin
    assert [type(f) for f in frames_of(wire)] == [ResponseFrame, ChecksumsFrame, DataFrame]
    assert server.open_request_count == 0
    # A late send after the stream finished is a dropped race, not an error.
    assert not server.send_data(0, b"more")


@pytest.mark.parametrize(
    ("sums", "body"), [([7, 8], b"abcd" * 1000), ([], b""), ([5], b""), ([], b"xy")]
)
def test_a_whole_response_is_one_write_with_the_bytes_of_the_separate_calls(
    sums: list[int], body: bytes
) -> None:
    header = ResponseHeader(size=len(body), offset=0, length=len(body))
    apart, apart_quic = make(False)
    data(apart, 0, encode_frame(RequestFrame(GET)), fin=True)
    apart.send_response(0, header)
    if sums:
        apart.send_checksums(0, 3, sums)
    apart.send_data(0, body, end_stream=True)
    whole, whole_quic = make(False)
    data(whole, 0, encode_frame(RequestFrame(GET)), fin=True)
    assert whole.send_whole_response(0, header, 3, sums, memoryview(body))
    assert len(whole_quic.sent) == 1 and whole_quic.sent[0].end_stream
    assert whole_quic.stream_bytes(0) == apart_quic.stream_bytes(0)
    assert whole.open_request_count == 0
    assert not whole.send_whole_response(0, header, 0, [], b"")  # finished: a dropped race


def test_a_whole_response_follows_the_send_rules_and_sends_nothing_when_they_fail() -> None:
    server, quic = make(False)
    head = RequestHeader(op="HEAD", bucket="b", key="k")
    data(server, 0, encode_frame(RequestFrame(head)), fin=True)
    with pytest.raises(LocalProtocolError, match="cannot send DATA"):
        server.send_whole_response(0, ResponseHeader(size=1), 0, [1], b"x")  # HEAD: no body
    data(server, 4, encode_frame(RequestFrame(GET)), fin=True)
    server.send_response(4, ResponseHeader(size=1, offset=0, length=1))
    with pytest.raises(LocalProtocolError, match="cannot send RESPONSE"):
        server.send_whole_response(4, ResponseHeader(size=1), 0, [1], b"x")  # a second one
    assert [sent.stream_id for sent in quic.sent] == [4]  # the first RESPONSE alone
    assert server.send_whole_response(0, ResponseHeader(size=1), 0, [1], b"")  # HEAD, whole
    assert quic.stream_bytes(0)[1]


def test_large_data_is_not_copied_into_a_joined_buffer() -> None:
    server, quic = make(False)
    data(server, 0, encode_frame(RequestFrame(GET)), fin=True)
    server.send_response(0, ResponseHeader(offset=0, length=10000))
    payload = bytes(10000)
    server.send_data(0, payload, end_stream=True)
    assert quic.sent[-1].data == payload and quic.sent[-2].data == encode_frame_header(0, 10000)


def test_put_with_trailer_and_checksums() -> None:
    server, _ = make(False)
    put = RequestHeader(op="PUT", bucket="b", key="k", content_length=2)
    wire = encode_frame(RequestFrame(put)) + encode_frame(ChecksumsFrame(0, (5,)))
    wire += encode_frame(DataFrame(b"hi")) + encode_frame(TrailerFrame(Trailer()))
    events = data(server, 0, wire, fin=True)
    assert [type(e) for e in events] == [
        ev.RequestReceived,
        ev.ChecksumsReceived,
        ev.DataReceived,
        ev.TrailerReceived,
        ev.StreamEnded,
    ]


def test_frame_out_of_order_closes_with_frame_unexpected() -> None:
    server, quic = make(False)
    events = data(server, 0, encode_frame(DataFrame(b"x")))
    assert isinstance(events[-1], ev.ConnectionTerminated)
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_FRAME_UNEXPECTED
    assert server.closed
    assert data(server, 4, encode_frame(RequestFrame(GET))) == []


def test_data_after_get_request_is_unexpected() -> None:
    server, quic = make(False)
    data(server, 0, encode_frame(RequestFrame(GET)) + encode_frame(DataFrame(b"x")))
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_FRAME_UNEXPECTED


def test_malformed_request_gets_an_error_frame_and_connection_lives() -> None:
    server, quic = make(False)
    bad = encode_frame_header(FrameType.REQUEST, 1) + b"\xc1"
    events = data(server, 0, bad, fin=True)
    assert [type(e) for e in events] == [ev.StreamAbandoned]
    wire, fin = quic.stream_bytes(0)
    assert fin
    (frame,) = frames_of(wire)
    assert isinstance(frame, ErrorFrame) and frame.code == ErrorCode.QS_MESSAGE_ERROR
    assert quic.closed is None
    assert data(server, 4, encode_frame(RequestFrame(GET)), fin=True)[0] == ev.RequestReceived(
        stream_id=4, header=GET
    )


def test_fin_before_request_is_request_incomplete() -> None:
    server, quic = make(False)
    events = data(server, 0, b"", fin=True)
    assert events == [
        ev.StreamAbandoned(
            stream_id=0,
            code=ErrorCode.QS_REQUEST_INCOMPLETE,
            reason="stream ended before a message",
        )
    ]
    assert quic.resets == [(0, ErrorCode.QS_REQUEST_INCOMPLETE)]


def test_control_stream_rules() -> None:
    server, quic = make(False)
    events = data(server, 2, CONTROL)
    assert isinstance(events[0], ev.SettingsReceived)
    assert server.peer_settings_received
    data(server, 6, CONTROL)
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_STREAM_CREATION_ERROR

    server, quic = make(False)
    data(server, 2, encode_varint(0) + encode_frame(GoawayFrame(0)))
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_MISSING_SETTINGS

    server, quic = make(False)
    data(server, 2, CONTROL, fin=True)
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_CLOSED_CRITICAL_STREAM

    server, quic = make(False)
    data(server, 2, CONTROL + encode_frame(Settings().to_frame()))
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_FRAME_UNEXPECTED

    server, quic = make(False)
    data(server, 2, CONTROL)
    server.handle_event(qe.StreamReset(error_code=0, stream_id=2))
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_CLOSED_CRITICAL_STREAM


def test_stream_type_may_arrive_one_byte_at_a_time() -> None:
    server, quic = make(False)
    wire = encode_varint(0x4000) + b"junk"  # an unknown, 4-byte stream type
    for i in range(len(wire)):
        data(server, 2, wire[i : i + 1])
    assert quic.stops == [(2, ErrorCode.QS_STREAM_CREATION_ERROR)]
    assert quic.closed is None


def test_server_initiated_bidi_stream_is_refused() -> None:
    client, quic = make(True)
    data(client, 1, b"x")
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_STREAM_CREATION_ERROR


def test_goaway_both_ways() -> None:
    server, quic = make(False)
    data(server, 0, encode_frame(RequestFrame(GET)), fin=True)
    assert server.send_goaway() == 4
    control_frames = frames_of(quic.stream_bytes(3)[0])
    assert control_frames == [GoawayFrame(4)]
    data(server, 4, encode_frame(RequestFrame(GET)), fin=True)
    assert (4, ErrorCode.QS_REQUEST_REJECTED) in quic.resets

    client, cquic = make(True)
    events = data(client, 3, CONTROL + encode_frame(GoawayFrame(8)))
    assert events[-1] == ev.GoawayReceived(stream_id=8)
    with pytest.raises(LocalProtocolError):
        client.send_request(GET)
    data(client, 3, encode_frame(GoawayFrame(12)))
    assert cquic.closed is not None and cquic.closed[0] == ErrorCode.QS_ID_ERROR


def test_goaway_received_by_a_server_is_unexpected() -> None:
    server, quic = make(False)
    data(server, 2, CONTROL + encode_frame(GoawayFrame(0)))
    assert quic.closed is not None and quic.closed[0] == ErrorCode.QS_FRAME_UNEXPECTED


def test_local_misuse_raises() -> None:
    server, _ = make(False)
    data(server, 0, encode_frame(RequestFrame(GET)), fin=True)
    with pytest.raises(LocalProtocolError):
        server.send_data(0, b"x")  # before RESPONSE
    with pytest.raises(LocalProtocolError):
        server.send_listing(0, Listing())  # a GET is not answered with LISTING
    with pytest.raises(LocalProtocolError):
        server.send_data(8, b"x")  # never-opened stream
    client, _ = make(True)
    with pytest.raises(LocalProtocolError):
        client.send_response(0, ResponseHeader())
    huge = RequestHeader(op="GET", bucket="b", key="k" * 70000)
    with pytest.raises(LocalProtocolError):
        client.send_request(huge)
    assert client.open_request_count == 0


def test_checksums_are_split_to_fit_the_peer_frame_size() -> None:
    server, quic = make(False)
    data(server, 0, encode_frame(RequestFrame(RequestHeader(op="HEAD", bucket="b", key="k"))), True)
    server.send_response(0, ResponseHeader(size=1))
    server.send_checksums(0, 0, list(range(5000)))  # 20000 bytes > default 65536? no: fits
    server.send_checksums(0, 5000, list(range(40000)))  # 160000 bytes: must split
    server.end_stream(0)
    frames = [f for f in frames_of(quic.stream_bytes(0)[0]) if isinstance(f, ChecksumsFrame)]
    assert sum(len(f.checksums) for f in frames) == 45000
    assert all(len(f.checksums) * 4 <= 65536 for f in frames)
    assert [f.first_block for f in frames] == sorted(f.first_block for f in frames)


def test_stop_sending_and_reset_free_the_request() -> None:
    server, _ = make(False)
    put = RequestHeader(op="PUT", bucket="b", key="k")
    data(server, 0, encode_frame(RequestFrame(put)) + encode_frame(DataFrame(b"part")))
    events = server.handle_event(
        qe.StreamReset(error_code=ErrorCode.QS_REQUEST_CANCELLED, stream_id=0)
    )
    assert events == [ev.StreamReset(stream_id=0, code=ErrorCode.QS_REQUEST_CANCELLED)]
    assert server.open_request_count == 1  # our side is still open
    events = server.handle_event(
        qe.StopSendingReceived(error_code=ErrorCode.QS_REQUEST_CANCELLED, stream_id=0)
    )
    assert events == [ev.StopSendingReceived(stream_id=0, code=ErrorCode.QS_REQUEST_CANCELLED)]
    assert server.open_request_count == 0
    assert not server.send_error(0, ErrorCode.QS_INTERNAL_ERROR)  # dropped, stream gone
    # Late bytes for the freed stream do not open a new request.
    assert data(server, 0, encode_frame(DataFrame(b"late"))) == []


def test_streams_arriving_out_of_order_are_all_served() -> None:
    server, _ = make(False)
    assert isinstance(data(server, 8, encode_frame(RequestFrame(GET)), True)[0], ev.RequestReceived)
    assert isinstance(data(server, 4, encode_frame(RequestFrame(GET)), True)[0], ev.RequestReceived)
    assert isinstance(data(server, 0, encode_frame(RequestFrame(GET)), True)[0], ev.RequestReceived)


def test_concurrent_request_limit() -> None:
    server, _quic = make(False, settings=Settings(max_concurrent_requests=2))
    for sid in (0, 4):
        data(server, sid, encode_frame(RequestFrame(GET)), fin=True)
    events = data(server, 8, encode_frame(RequestFrame(GET)), fin=True)
    assert events[0] == ev.StreamAbandoned(
        stream_id=8, code=ErrorCode.QS_EXCESSIVE_LOAD, reason="too many concurrent requests"
    )


def test_cancel_request_sends_stop_and_reset() -> None:
    client, quic = make(True)
    sid = client.send_request(RequestHeader(op="PUT", bucket="b", key="k"))
    client.cancel_request(sid)
    assert quic.stops == [(sid, ErrorCode.QS_REQUEST_CANCELLED)]
    assert quic.resets == [(sid, ErrorCode.QS_REQUEST_CANCELLED)]
    assert not client.send_data(sid, b"x")


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 2, 4, 6, 1, 3]), st.binary(max_size=80), st.booleans()),
        max_size=8,
    ),
    st.booleans(),
)
def test_any_peer_bytes_end_in_events_or_a_spec_close(
    pieces: list[tuple[int, bytes, bool]], is_client: bool
) -> None:
    """Failure contract of handle_event: never an exception, only events and spec codes."""
    conn, quic = make(is_client)
    if is_client:
        conn.send_request(GET)
    for sid, payload, fin in pieces:
        if is_client and sid in (2, 6):
            sid += 1  # server-initiated unidirectional streams
        conn.handle_event(qe.StreamDataReceived(data=payload, end_stream=fin, stream_id=sid))
    if quic.closed is not None:
        assert quic.closed[0] in set(ErrorCode)
    for _, code in quic.resets + quic.stops:
        assert code in set(ErrorCode)
