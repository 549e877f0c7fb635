"""Typed, frozen frames of the quicstore protocol (spec Section 4) and their encoding.

Decoding is split in two: :mod:`quicstore.proto.framer` finds frame boundaries in a byte
stream; :func:`decode_payload` turns one complete payload into a typed frame. DATA payloads
never pass through here: the framer hands them out as :class:`DataFrame` pieces that are
memoryview slices of the bytes it was fed (no copy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgspec

from .codes import ErrorCode, FrameType
from .errors import RemoteProtocolError, connection_error
from .messages import Listing, RequestHeader, ResponseHeader, Trailer, encode_message
from .varint import decode_varint, encode_varint

Buffer = bytes | bytearray | memoryview
"""Any bytes-like object the codec accepts."""


@dataclass(frozen=True, slots=True)
class DataFrame:
    """Object bytes (DATA, Section 4.3).

    When decoded, one wire DATA frame may arrive as several DataFrame pieces whose
    concatenation is the frame's payload; ``data`` is then a read-only view into the bytes
    given to the framer and stays valid as long as the caller keeps it.
    """

    data: Buffer


@dataclass(frozen=True, slots=True)
class RequestFrame:
    """REQUEST (Section 4.4): opens a request."""

    header: RequestHeader


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """RESPONSE (Section 4.5): first frame of a successful response."""

    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """ERROR (Section 4.6): a failed response."""

    code: int
    """Error code from spec Section 12 (may be unknown to this implementation)."""
    reason: str
    """Human-readable reason; never acted on."""


@dataclass(frozen=True, slots=True)
class ChecksumsFrame:
    """CHECKSUMS (Section 4.7): CRC32C of consecutive blocks from ``first_block``."""

    first_block: int
    """Index of the block of ``checksums[0]``."""
    checksums: tuple[int, ...]
    """CRC32C values, one per block, in block order."""


@dataclass(frozen=True, slots=True)
class TrailerFrame:
    """TRAILER (Section 4.8): end of a PUT body."""

    trailer: Trailer


@dataclass(frozen=True, slots=True)
class ListingFrame:
    """LISTING (Section 4.9): one page of a LIST."""

    listing: Listing


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    """SETTINGS (Section 4.10): ``(identifier, value)`` pairs in wire order, unknown ones kept."""

    settings: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class GoawayFrame:
    """GOAWAY (Section 4.11): the first request stream the server will not process."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame of a type this implementation does not know; its payload was skipped."""

    frame_type: int
    length: int
    """Payload length in bytes."""


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A frame whose structured payload failed to decode (a stream-scope error).

    The frame still occupies its place in the message grammar (Section 9); the connection
    layer answers it with ``code`` as Section 4.4/4.5 say.
    """

    frame_type: int
    code: int
    reason: str


Frame = (
    DataFrame
    | RequestFrame
    | ResponseFrame
    | ErrorFrame
    | ChecksumsFrame
    | TrailerFrame
    | ListingFrame
    | SettingsFrame
    | GoawayFrame
    | UnknownFrame
    | MalformedFrame
)
"""Everything the framer can produce."""


# --- encoding ---------------------------------------------------------------------------


def encode_frame_header(frame_type: int, length: int) -> bytes:
    """``Type (i), Length (i)`` for a frame whose payload is ``length`` bytes."""
    return encode_varint(frame_type) + encode_varint(length)


def encode_data_header(length: int) -> bytes:
    """The header of a DATA frame; the caller sends the payload after it, uncopied."""
    return encode_frame_header(FrameType.DATA, length)


def _with_header(frame_type: int, payload: bytes) -> bytes:
    return encode_frame_header(frame_type, len(payload)) + payload


def encode_payload(frame: Frame) -> tuple[int, bytes]:
    """The ``(type, payload)`` of a frame. DATA payloads are returned as bytes (a copy)."""
    if isinstance(frame, DataFrame):
        return FrameType.DATA, bytes(frame.data)
    if isinstance(frame, RequestFrame):
        return FrameType.REQUEST, encode_message(frame.header)
    if isinstance(frame, ResponseFrame):
        return FrameType.RESPONSE, encode_message(frame.header)
    if isinstance(frame, ErrorFrame):
        return FrameType.ERROR, encode_varint(frame.code) + frame.reason.encode("utf-8")
    if isinstance(frame, ChecksumsFrame):
        if not frame.checksums:
            raise ValueError("a CHECKSUMS frame carries at least one checksum")
        packed = struct.pack(f">{len(frame.checksums)}I", *frame.checksums)
        return FrameType.CHECKSUMS, encode_varint(frame.first_block) + packed
    if isinstance(frame, TrailerFrame):
        return FrameType.TRAILER, encode_message(frame.trailer)
    if isinstance(frame, ListingFrame):
        return FrameType.LISTING, encode_message(frame.listing)
    if isinstance(frame, SettingsFrame):
        return FrameType.SETTINGS, b"".join(
            encode_varint(k) + encode_varint(v) for k, v in frame.settings
        )
    if isinstance(frame, GoawayFrame):
        return FrameType.GOAWAY, encode_varint(frame.stream_id)
    raise TypeError(f"cannot encode {type(frame).__name__}")


def encode_frame(frame: Frame) -> bytes:
    """The complete wire form of a frame."""
    frame_type, payload = encode_payload(frame)
    return _with_header(frame_type, payload)


def encode_checksums(first_block: int, packed: Buffer) -> bytes:
    """A CHECKSUMS frame from checksums already packed as big-endian 32-bit values."""
    if not packed or len(packed) % 4:
        raise ValueError("packed checksums must be a non-empty multiple of 4 bytes")
    return _with_header(FrameType.CHECKSUMS, encode_varint(first_block) + bytes(packed))


def encode_unknown_frame(frame_type: int, payload: bytes) -> bytes:
    """A frame of an arbitrary (e.g. greasing) type."""
    return _with_header(frame_type, payload)


# --- decoding ---------------------------------------------------------------------------

_REQUEST_DECODER = msgspec.msgpack.Decoder(RequestHeader)
_RESPONSE_DECODER = msgspec.msgpack.Decoder(ResponseHeader)
_TRAILER_DECODER = msgspec.msgpack.Decoder(Trailer)
_LISTING_DECODER = msgspec.msgpack.Decoder(Listing)

KNOWN_FRAME_TYPES = frozenset(int(t) for t in FrameType)
"""Frame types this implementation understands."""


def _frame_error(frame_type: int, reason: str) -> RemoteProtocolError:
    return connection_error(ErrorCode.QS_FRAME_ERROR, f"{FrameType(frame_type).name}: {reason}")


def _decode_varint_exact(frame_type: int, payload: Buffer) -> int:
    decoded = decode_varint(payload, 0)
    if decoded is None:
        raise _frame_error(frame_type, "truncated integer")
    value, end = decoded
    if end != len(payload):
        raise _frame_error(frame_type, "bytes left over after the integer")
    return value


def _decode_structured(frame_type: int, payload: Buffer) -> Frame:
    try:
        if frame_type == FrameType.REQUEST:
            return RequestFrame(_REQUEST_DECODER.decode(payload))
        if frame_type == FrameType.RESPONSE:
            return ResponseFrame(_RESPONSE_DECODER.decode(payload))
        if frame_type == FrameType.TRAILER:
            return TrailerFrame(_TRAILER_DECODER.decode(payload))
        return ListingFrame(_LISTING_DECODER.decode(payload))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        reason = f"{FrameType(frame_type).name} payload: {exc}"
        return MalformedFrame(frame_type, ErrorCode.QS_MESSAGE_ERROR, reason[:200])


def decode_payload(frame_type: int, payload: Buffer) -> Frame:
    """Decode the complete payload of a known, non-DATA frame type.

    Failure contract: a payload that breaks its frame's layout raises
    :class:`RemoteProtocolError` with the code spec Section 4 names (QS_FRAME_ERROR,
    QS_SETTINGS_ERROR, QS_ID_ERROR); a structured payload that is not a valid message yields
    a :class:`MalformedFrame` with QS_MESSAGE_ERROR. No other exception escapes.
    """
    if frame_type in (
        FrameType.REQUEST,
        FrameType.RESPONSE,
        FrameType.TRAILER,
        FrameType.LISTING,
    ):
        return _decode_structured(frame_type, payload)
    if frame_type == FrameType.ERROR:
        decoded = decode_varint(payload, 0)
        if decoded is None:
            raise _frame_error(frame_type, "truncated error code")
        code, end = decoded
        try:
            reason = bytes(payload[end:]).decode("utf-8")
        except UnicodeDecodeError:
            raise _frame_error(frame_type, "reason phrase is not UTF-8") from None
        return ErrorFrame(code, reason)
    if frame_type == FrameType.CHECKSUMS:
        decoded = decode_varint(payload, 0)
        if decoded is None:
            raise _frame_error(frame_type, "truncated first block")
        first_block, end = decoded
        remainder = len(payload) - end
        if remainder == 0 or remainder % 4:
            raise _frame_error(frame_type, "checksums must be a non-empty multiple of 4 bytes")
        values = struct.unpack_from(f">{remainder // 4}I", payload, end)
        return ChecksumsFrame(first_block, values)
    if frame_type == FrameType.SETTINGS:
        pairs: list[tuple[int, int]] = []
        seen: set[int] = set()
        pos = 0
        while pos < len(payload):
            ident = decode_varint(payload, pos)
            if ident is None:
                raise _frame_error(frame_type, "truncated setting identifier")
            value = decode_varint(payload, ident[1])
            if value is None:
                raise _frame_error(frame_type, "truncated setting value")
            if ident[0] in seen:
                raise connection_error(
                    ErrorCode.QS_SETTINGS_ERROR, f"setting 0x{ident[0]:x} appears twice"
                )
            seen.add(ident[0])
            pairs.append((ident[0], value[0]))
            pos = value[1]
        return SettingsFrame(tuple(pairs))
    if frame_type == FrameType.GOAWAY:
        stream_id = _decode_varint_exact(frame_type, payload)
        if stream_id % 4:
            raise connection_error(
                ErrorCode.QS_ID_ERROR,
                f"GOAWAY names stream {stream_id}, not a client-initiated bidirectional stream",
            )
        return GoawayFrame(stream_id)
    raise ValueError(f"frame type 0x{frame_type:x} has no payload decoder")
