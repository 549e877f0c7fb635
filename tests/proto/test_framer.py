"""The incremental frame reader (quicstore.proto.framer)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quicstore.proto.codes import ErrorCode, FrameType
from quicstore.proto.errors import RemoteProtocolError
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import (
    DataFrame,
    Frame,
    RequestFrame,
    UnknownFrame,
    encode_frame,
    encode_frame_header,
    encode_unknown_frame,
)
from quicstore.proto.messages import RequestHeader

from ..strategies import KNOWN_TYPES, frames

FUZZ_EXAMPLES = int(os.environ.get("QUICSTORE_FUZZ_EXAMPLES", "10000"))
"""Examples for the any-bytes property; CI keeps the default of 10,000."""


def split_points(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


def normalize(frames_out: list[Frame]) -> list[Frame]:
    """Join consecutive DATA pieces so that different splits compare equal."""
    out: list[Frame] = []
    for f in frames_out:
        if isinstance(f, DataFrame) and not f.data:
            continue  # an empty DATA frame carries nothing
        if isinstance(f, DataFrame) and out and isinstance(out[-1], DataFrame):
            out[-1] = DataFrame(bytes(out[-1].data) + bytes(f.data))
        elif isinstance(f, DataFrame):
            out.append(DataFrame(bytes(f.data)))
        else:
            out.append(f)
    return out


def run(pieces: list[bytes], max_frame_size: int = 65536) -> tuple[list[Frame], int | None]:
    reader = FrameReader(max_frame_size)
    got: list[Frame] = []
    try:
        for i, piece in enumerate(pieces):
            got += reader.feed(piece, end_stream=i == len(pieces) - 1)
    except RemoteProtocolError as exc:
        return normalize(got), exc.code
    return normalize(got), None


@given(st.lists(frames, max_size=6), st.lists(st.integers(0, 10**6), max_size=8))
def test_frames_survive_any_split(frame_list: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frame_list)
    got, error = run(split_points(wire, cuts), max_frame_size=1 << 24)
    assert error is None
    assert got == normalize(frame_list)


def test_one_byte_at_a_time() -> None:
    header = RequestHeader(op="GET", bucket="b", key="k", offset=5, length=10)
    wire = encode_frame(RequestFrame(header)) + encode_frame(DataFrame(b"hello world"))
    got, error = run([wire[i : i + 1] for i in range(len(wire))])
    assert error is None
    assert got == [RequestFrame(header), DataFrame(b"hello world")]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(
    st.binary(max_size=200)
    | st.lists(st.sampled_from([*KNOWN_TYPES, 33, 64]), max_size=1).map(lambda t: bytes(t)),
    st.lists(st.integers(0, 1000), max_size=6),
    st.integers(4096, 70000),
)
def test_any_bytes_in_any_split_give_frames_or_the_protocol_error(
    data: bytes, cuts: list[int], max_frame_size: int
) -> None:
    """The failure contract: frames, or RemoteProtocolError with a spec code; and the
    outcome does not depend on how the bytes were split."""
    whole_frames, whole_error = run([data], max_frame_size)
    split_frames, split_error = run(split_points(data, cuts), max_frame_size)
    assert whole_error == split_error
    if whole_error is None:
        assert whole_frames == split_frames
    else:
        assert whole_error in {
            ErrorCode.QS_FRAME_ERROR,
            ErrorCode.QS_EXCESSIVE_LOAD,
            ErrorCode.QS_SETTINGS_ERROR,
            ErrorCode.QS_ID_ERROR,
        }


def test_oversized_frame_is_refused_before_its_payload() -> None:
    reader = FrameReader(max_frame_size=4096)
    with pytest.raises(RemoteProtocolError) as exc:
        reader.feed(encode_frame_header(FrameType.REQUEST, 4097))
    assert exc.value.code == ErrorCode.QS_EXCESSIVE_LOAD


def test_huge_data_and_unknown_frames_are_streamed_not_buffered() -> None:
    reader = FrameReader(max_frame_size=4096)
    out = reader.feed(encode_frame_header(FrameType.DATA, 1 << 40) + b"abc")
    assert [bytes(f.data) for f in out if isinstance(f, DataFrame)] == [b"abc"]
    reader = FrameReader(max_frame_size=4096)
    out = reader.feed(encode_frame_header(0x21, 1 << 40) + b"x" * 100)
    assert out == [UnknownFrame(0x21, 1 << 40)]
    assert not reader.at_frame_boundary


def test_truncated_frame_at_fin_is_a_frame_error() -> None:
    reader = FrameReader(max_frame_size=4096)
    with pytest.raises(RemoteProtocolError) as exc:
        reader.feed(bytes.fromhex("00056865"), end_stream=True)
    assert exc.value.code == ErrorCode.QS_FRAME_ERROR


def test_data_pieces_are_views_of_the_input() -> None:
    wire = encode_frame_header(FrameType.DATA, 5) + b"hello"
    reader = FrameReader(max_frame_size=4096)
    (piece,) = reader.feed(wire)
    assert isinstance(piece, DataFrame)
    assert isinstance(piece.data, memoryview)
    assert piece.data.obj is wire  # no copy


def test_unknown_frames_are_skipped_between_known_ones() -> None:
    wire = encode_unknown_frame(0x21, b"grease") + encode_frame(DataFrame(b"x"))
    got, error = run([wire])
    assert error is None
    assert got == [UnknownFrame(0x21, 6), DataFrame(b"x")]
