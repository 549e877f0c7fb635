"""Incremental frame reader: bytes of one stream in, typed frames out (spec Section 4.1).

Bytes may arrive in pieces of any size, down to one byte at a time. DATA payloads are
handed out as they arrive, as memoryview slices of the caller's bytes (never buffered);
unknown frame types are skipped without buffering; every other payload is bounded by
``max_frame_size`` before any memory is committed for it.
"""

from __future__ import annotations

from .codes import ErrorCode, FrameType
from .errors import connection_error
from .frames import KNOWN_FRAME_TYPES as _KNOWN
from .frames import Buffer, DataFrame, Frame, UnknownFrame, decode_payload
from .varint import decode_varint

_MAX_HEADER = 16
"""Longest possible frame header: two 8-byte variable-length integers."""

_EMPTY = memoryview(b"")


class FrameReader:
    """Splits the bytes of one stream into frames.

    Failure contract: :meth:`feed` returns frames or raises
    :class:`~quicstore.proto.errors.RemoteProtocolError` carrying the spec's code
    (QS_FRAME_ERROR for truncation or bad layout, QS_EXCESSIVE_LOAD for a frame longer than
    ``max_frame_size``, QS_SETTINGS_ERROR, QS_ID_ERROR); malformed structured payloads come
    out as :class:`~quicstore.proto.frames.MalformedFrame`. Nothing else is raised for any
    input. After an exception the reader must not be fed again.
    """

    __slots__ = (
        "_buffer",
        "_frame_type",
        "_header",
        "_max_frame_size",
        "_mode",
        "_remaining",
        "bytes_consumed",
    )

    # modes
    _HEADER = 0
    _DATA = 1
    _BUFFER = 2
    _SKIP = 3

    def __init__(self, max_frame_size: int) -> None:
        """``max_frame_size``: the largest non-DATA payload accepted, in bytes."""
        self._max_frame_size = max_frame_size
        self._mode = self._HEADER
        self._header = bytearray()
        self._buffer = bytearray()
        self._frame_type = 0
        self._remaining = 0
        self.bytes_consumed = 0
        """Total bytes fed so far."""

    @property
    def at_frame_boundary(self) -> bool:
        """True when no frame is partly read."""
        return self._mode == self._HEADER and not self._header

    @property
    def max_frame_size(self) -> int:
        """The largest non-DATA payload accepted, in bytes."""
        return self._max_frame_size

    def feed(self, data: Buffer, end_stream: bool = False) -> list[Frame]:
        """Consume ``data`` (the next bytes of the stream) and return the frames completed.

        ``end_stream`` says the stream ends after ``data``; a frame cut short by it raises
        QS_FRAME_ERROR.
        """
        frames: list[Frame] = []
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.bytes_consumed += len(view)
        pos = 0
        end = len(view)
        while pos < end:
            mode = self._mode
            if mode == self._DATA:
                take = min(self._remaining, end - pos)
                frames.append(DataFrame(view[pos : pos + take]))
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._mode = self._HEADER
            elif mode == self._HEADER:
                pos = self._read_header(view, pos, frames)
            elif mode == self._BUFFER:
                take = min(self._remaining, end - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                self._remaining -= take
                if not self._remaining:
                    payload = bytes(self._buffer)
                    self._buffer.clear()
                    self._mode = self._HEADER
                    frames.append(decode_payload(self._frame_type, payload))
            else:  # _SKIP
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._mode = self._HEADER
        if end_stream and not self.at_frame_boundary:
            raise connection_error(ErrorCode.QS_FRAME_ERROR, "stream ended inside a frame")
        return frames

    def _read_header(self, view: memoryview, pos: int, frames: list[Frame]) -> int:
        """Parse a frame header at ``view[pos:]`` (after any buffered partial header)."""
        if self._header:
            # Complete a header split across pieces: top up the small buffer and retry.
            need = _MAX_HEADER - len(self._header)
            chunk = view[pos : pos + need]
            candidate = bytes(self._header) + bytes(chunk)
            parsed = _parse_header(candidate)
            if parsed is None:
                self._header += chunk
                return pos + len(chunk)
            frame_type, length, header_end = parsed
            pos += header_end - len(self._header)
            self._header.clear()
        else:
            parsed = _parse_header(view, pos)
            if parsed is None:
                self._header += view[pos:]
                return len(view)
            frame_type, length, pos = parsed
        self._start_payload(frame_type, length, view, pos, frames)
        return pos if self._mode != self._HEADER or length == 0 else pos + length

    def _start_payload(
        self, frame_type: int, length: int, view: memoryview, pos: int, frames: list[Frame]
    ) -> None:
        """Choose how to consume the payload; decode it at once if it is all in ``view``."""
        if frame_type == FrameType.DATA:
            if length == 0:
                frames.append(DataFrame(_EMPTY))
            else:
                self._mode = self._DATA
                self._remaining = length
            return
        if frame_type not in _KNOWN:
            if length:
                self._mode = self._SKIP
                self._remaining = length
            frames.append(UnknownFrame(frame_type, length))
            return
        if length > self._max_frame_size:
            raise connection_error(
                ErrorCode.QS_EXCESSIVE_LOAD,
                f"{FrameType(frame_type).name} frame of {length} bytes exceeds "
                f"MAX_FRAME_SIZE {self._max_frame_size}",
            )
        if pos + length <= len(view):
            # Whole payload available: decode in place; _read_header skips past it.
            frames.append(decode_payload(frame_type, view[pos : pos + length]))
            return
        self._mode = self._BUFFER
        self._frame_type = frame_type
        self._remaining = length


def _parse_header(buf: Buffer, pos: int = 0) -> tuple[int, int, int] | None:
    """``(type, length, payload_start)`` of the header at ``buf[pos:]``, or None if cut."""
    frame_type = decode_varint(buf, pos)
    if frame_type is None:
        return None
    length = decode_varint(buf, frame_type[1])
    if length is None:
        return None
    return frame_type[0], length[0], length[1]
