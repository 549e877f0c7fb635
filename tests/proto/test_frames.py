"""Frame encoding and payload decoding (quicstore.proto.frames)."""

from __future__ import annotations

import pytest
from hypothesis import given

from quicstore.proto.codes import ErrorCode, FrameType
from quicstore.proto.errors import RemoteProtocolError
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import (
    ChecksumsFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    GoawayFrame,
    MalformedFrame,
    RequestFrame,
    decode_payload,
    encode_checksums,
    encode_frame,
    encode_payload,
)
from quicstore.proto.messages import RequestHeader

from ..strategies import frames


def decode_whole(wire: bytes) -> list[Frame]:
    return FrameReader(max_frame_size=1 << 24).feed(wire, end_stream=True)


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    decoded = decode_whole(encode_frame(frame))
    if isinstance(frame, DataFrame):
        assert b"".join(bytes(d.data) for d in decoded if isinstance(d, DataFrame)) == frame.data
    else:
        assert decoded == [frame]


def test_error_frame_layout() -> None:
    # Type 0x03, Length 6, code 0x5124 as a 4-byte varint, "gone"
    wire = encode_frame(ErrorFrame(ErrorCode.QS_NOT_FOUND, "gone"))
    assert wire.hex() == "03" + "08" + "80005124" + b"gone".hex()


def test_checksums_frame_layout_and_packed_form() -> None:
    frame = ChecksumsFrame(2, (0xE3069283, 1))
    wire = encode_frame(frame)
    assert wire.hex() == "040902e306928300000001"
    assert encode_checksums(2, bytes.fromhex("e306928300000001")) == wire


def test_checksums_frame_needs_a_checksum() -> None:
    with pytest.raises(ValueError):
        encode_payload(ChecksumsFrame(0, ()))
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.CHECKSUMS, b"\x00")
    assert exc.value.code == ErrorCode.QS_FRAME_ERROR
    with pytest.raises(RemoteProtocolError):
        decode_payload(FrameType.CHECKSUMS, b"\x00\x01\x02")


def test_goaway_must_name_a_client_bidi_stream() -> None:
    assert decode_payload(FrameType.GOAWAY, b"\x08") == GoawayFrame(8)
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.GOAWAY, b"\x05")
    assert exc.value.code == ErrorCode.QS_ID_ERROR
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.GOAWAY, b"\x08\x00")
    assert exc.value.code == ErrorCode.QS_FRAME_ERROR


def test_settings_duplicate_is_settings_error() -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.SETTINGS, b"\x01\x02\x01\x03")
    assert exc.value.code == ErrorCode.QS_SETTINGS_ERROR
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.SETTINGS, b"\x01")
    assert exc.value.code == ErrorCode.QS_FRAME_ERROR


def test_error_reason_must_be_utf8() -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_payload(FrameType.ERROR, b"\x01\xff")
    assert exc.value.code == ErrorCode.QS_FRAME_ERROR


def test_malformed_structured_payload_is_a_message_error() -> None:
    frame = decode_payload(FrameType.REQUEST, b"\xc1")  # 0xc1 is never used in msgpack
    assert isinstance(frame, MalformedFrame)
    assert frame.code == ErrorCode.QS_MESSAGE_ERROR
    missing_bucket = decode_payload(FrameType.REQUEST, b"\x81\xa2op\xa3GET")
    assert isinstance(missing_bucket, MalformedFrame)


def test_unknown_request_fields_are_ignored() -> None:
    # {"op": "GET", "bucket": "b", "key": "k", "future": 1}
    payload = bytes.fromhex("84") + b"\xa2op\xa3GET\xa6bucket\xa1b\xa3key\xa1k\xa6future\x01"
    frame = decode_payload(FrameType.REQUEST, payload)
    assert frame == RequestFrame(RequestHeader(op="GET", bucket="b", key="k"))


def test_nil_means_absent() -> None:
    payload = b"\x83\xa2op\xa4HEAD\xa6bucket\xa1b\xa9checksums\xc0"
    frame = decode_payload(FrameType.REQUEST, payload)
    assert frame == RequestFrame(RequestHeader(op="HEAD", bucket="b"))
