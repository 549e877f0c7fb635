"""The fuzz target shared by tools/fuzz/fuzz_proto.py (atheris) and the corpus replay test.

``fuzz_one(data)`` interprets ``data`` as a script of stream events fed to a server-side and a
client-side QuicstoreConnection (and a bare FrameReader), and checks the failure contract:
peer bytes end in events or a spec error code, never in any other exception.
"""

from __future__ import annotations

from aioquic.quic import events as qe

from quicstore.proto.codes import ErrorCode
from quicstore.proto.connection import QuicstoreConnection
from quicstore.proto.errors import RemoteProtocolError
from quicstore.proto.framer import FrameReader
from quicstore.proto.settings import Settings

CODES = frozenset(int(c) for c in ErrorCode)
STREAMS = (0, 2, 4, 6, 8, 1, 3, 7)
"""Stream IDs a script may use: client bidi, uni of either side, a server bidi."""


class NullQuic:
    """Accepts what the connection layer asks of QUIC; remembers codes to check them."""

    def __init__(self, is_client: bool) -> None:
        self._bidi = 0 if is_client else 1
        self._uni = 2 if is_client else 3
        self.codes: list[int] = []

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        return self._uni if is_unidirectional else self._bidi

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if stream_id == self._bidi:
            self._bidi += 4
        if stream_id == self._uni:
            self._uni += 4

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.codes.append(error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self.codes.append(error_code)

    def close(self, error_code: int = 0, frame_type: int | None = None,
              reason_phrase: str = "") -> None:
        self.codes.append(error_code)


def script(data: bytes) -> list[tuple[int, bytes, bool, bool]]:
    """Split fuzz bytes into (stream, payload, fin, reset) steps: each step is a header byte
    (stream index, fin bit, reset bit), a length byte and that many payload bytes."""
    steps = []
    pos = 0
    while pos + 2 <= len(data) and len(steps) < 64:
        head, size = data[pos], data[pos + 1]
        payload = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        steps.append((STREAMS[head % len(STREAMS)], payload, bool(head & 0x40),
                      bool(head & 0x80)))
    return steps


def fuzz_one(data: bytes) -> None:
    """Run one input; raise AssertionError if the failure contract is broken."""
    reader = FrameReader(4096)
    try:
        reader.feed(data, end_stream=True)
    except RemoteProtocolError as exc:
        assert exc.code in CODES, exc
    for is_client in (False, True):
        quic = NullQuic(is_client)
        conn = QuicstoreConnection(quic, is_client=is_client,  # type: ignore[arg-type]
                                   settings=Settings(max_frame_size=4096), grease=False)
        for stream_id, payload, fin, reset in script(data):
            if reset:
                conn.handle_event(qe.StreamReset(error_code=0x510C, stream_id=stream_id))
            else:
                conn.handle_event(
                    qe.StreamDataReceived(data=payload, end_stream=fin, stream_id=stream_id)
                )
        assert all(code in CODES for code in quic.codes), quic.codes
