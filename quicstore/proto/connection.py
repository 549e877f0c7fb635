"""The quicstore connection: protocol state layered over aioquic's sans-I/O QuicConnection.

Like aioquic's H3Connection, it turns QUIC events into quicstore events
(:meth:`QuicstoreConnection.handle_event`) and commands into frames on QUIC streams
(``send_*``). It performs no I/O and reads no clock: the caller moves datagrams and time.

Failure contract: for any bytes the peer sends, :meth:`QuicstoreConnection.handle_event`
returns events; a violation ends in the spec's reaction (CONNECTION_CLOSE with the code,
RESET_STREAM/STOP_SENDING, or an ERROR frame), reported as
:class:`~quicstore.proto.events.ConnectionTerminated` or
:class:`~quicstore.proto.events.StreamAbandoned`; no exception escapes. The ``send_*``
commands raise :class:`~quicstore.proto.errors.LocalProtocolError` when the caller breaks
the message grammar or a limit the peer announced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aioquic.quic import events as quic_events

from . import events as ev
from .codes import ErrorCode, FrameType, StreamType
from .errors import ErrorScope, LocalProtocolError, RemoteProtocolError, connection_error
from .framer import FrameReader
from .frames import (
    Buffer,
    ChecksumsFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    GoawayFrame,
    ListingFrame,
    MalformedFrame,
    RequestFrame,
    ResponseFrame,
    SettingsFrame,
    TrailerFrame,
    UnknownFrame,
    encode_data_header,
    encode_frame,
    encode_frame_header,
    encode_payload,
    encode_unknown_frame,
)
from .messages import OP_GET, OP_PUT, Listing, RequestHeader, ResponseHeader, Trailer
from .settings import Settings
from .state import (
    START_STATES,
    MessageInput,
    MessageState,
    input_for_frame_type,
    next_state,
    response_start_state,
)
from .varint import decode_varint, encode_varint

_SMALL_DATA = 4096
"""DATA payloads up to this size are joined to their header in one write (bytes)."""


class QuicLike(Protocol):
    """The part of aioquic's QuicConnection this layer uses (a fake can stand in for tests)."""

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int: ...
    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def stop_stream(self, stream_id: int, error_code: int) -> None: ...
    def close(
        self, error_code: int = 0, frame_type: int | None = None, reason_phrase: str = ""
    ) -> None: ...


class FlowCredit(Protocol):
    """Receive-window control (e.g. transport.compat.AppPacedQuicConnection): windows grow
    only as the application reports bytes consumed."""

    def pace_stream(self, stream_id: int) -> None: ...
    def consume(self, stream_id: int, size: int) -> None: ...
    def forget_stream(self, stream_id: int) -> None: ...


@dataclass(slots=True)
class _Request:
    """Per-request-stream state: one message each way (spec Section 9)."""

    stream_id: int
    reader: FrameReader | None
    recv_state: MessageState
    send_state: MessageState | None
    op: str | None = None
    recv_finished: bool = False
    """The peer's FIN or RESET_STREAM was processed."""
    send_finished: bool = False
    """Our FIN or RESET_STREAM was sent, or the peer's STOP_SENDING reset it."""
    discarding: bool = False
    """We abandoned the stream; further received bytes are ignored."""
    body_expected: int | None = None
    """Client, GET: DATA bytes the RESPONSE announced."""
    body_received: int = 0
    """DATA bytes received so far."""


@dataclass(slots=True)
class _UniStream:
    """A peer-initiated unidirectional stream whose type may not be known yet."""

    prefix: bytearray
    stream_type: int | None = None
    reader: FrameReader | None = None
    settings_seen: bool = False


def _frame_input(frame: Frame, op: str | None) -> MessageInput | None:
    """The grammar input of a decoded frame, or None for frames skipped everywhere."""
    if isinstance(frame, DataFrame):
        return MessageInput.DATA
    if isinstance(frame, UnknownFrame):
        return None
    if isinstance(frame, MalformedFrame):
        return input_for_frame_type(frame.frame_type, op)
    if isinstance(frame, RequestFrame):
        return input_for_frame_type(FrameType.REQUEST, frame.header.op)
    return input_for_frame_type(_FRAME_TYPE_OF[type(frame)])


_FRAME_TYPE_OF: dict[type, FrameType] = {
    ResponseFrame: FrameType.RESPONSE,
    ErrorFrame: FrameType.ERROR,
    ChecksumsFrame: FrameType.CHECKSUMS,
    TrailerFrame: FrameType.TRAILER,
    ListingFrame: FrameType.LISTING,
    SettingsFrame: FrameType.SETTINGS,
    GoawayFrame: FrameType.GOAWAY,
}


class QuicstoreConnection:
    """One quicstore connection, client or server, over an aioquic QuicConnection.

    Construct it once the QUIC connection exists (for a server: when the ALPN
    ``quicstore/1`` was negotiated); it opens the control stream and queues SETTINGS.
    """

    def __init__(
        self,
        quic: QuicLike,
        *,
        is_client: bool,
        settings: Settings | None = None,
        grease: bool = True,
        flow: FlowCredit | None = None,
    ) -> None:
        """``settings``: what this side announces and enforces (defaults: the spec's).
        ``grease``: add a reserved setting and a reserved frame to the control stream
        (spec Section 13) so that peers that choke on unknown codepoints are found early.
        ``flow``: when given, request streams' receive windows follow consumption: this layer
        reports every byte except DATA payloads at once, and the application reports DATA
        payloads with :meth:`data_consumed` when it is done with them (back-pressure)."""
        self.quic = quic
        self._flow = flow
        self.is_client = is_client
        self.local_settings = settings or Settings()
        self.peer_settings = Settings()
        """The peer's settings: the spec defaults until its SETTINGS arrives."""
        self.peer_settings_received = False
        self.goaway_received: int | None = None
        """Stream ID of the last GOAWAY received (client)."""
        self.goaway_sent: int | None = None
        """Stream ID of the last GOAWAY sent (server)."""
        self.closed = False
        """True once the connection has ended or this layer closed it."""
        self._requests: dict[int, _Request] = {}
        self._uni: dict[int, _UniStream] = {}
        self._peer_control_id: int | None = None
        self._highest_request_id = -4
        self._unseen_request_ids: set[int] = set()
        self._terminated_reported = False
        self._control_id = quic.get_next_available_stream_id(is_unidirectional=True)
        control = bytearray(encode_varint(StreamType.CONTROL))
        control += encode_frame(self.local_settings.to_frame(grease=1 if grease else None))
        if grease:
            control += encode_unknown_frame(0x1F * 2 + 0x21, b"quicstore")
        quic.send_stream_data(self._control_id, bytes(control))

    # ------------------------------------------------------------------ introspection

    @property
    def open_request_count(self) -> int:
        """Request streams not yet finished in both directions."""
        return len(self._requests)

    def streams_awaiting_request(self) -> list[int]:
        """Server: request streams opened by the peer whose REQUEST has not arrived yet."""
        return [
            sid
            for sid, req in self._requests.items()
            if req.recv_state is MessageState.REQUEST_START and not req.discarding
        ]

    def request_state(self, stream_id: int) -> tuple[MessageState, MessageState | None] | None:
        """``(receive state, send state)`` of a request stream, or None once it is freed."""
        req = self._requests.get(stream_id)
        return None if req is None else (req.recv_state, req.send_state)

    # ------------------------------------------------------------------ receiving

    def handle_event(self, event: quic_events.QuicEvent) -> list[ev.Event]:
        """Process one QUIC event; return the quicstore events it causes."""
        if self.closed and not isinstance(event, quic_events.ConnectionTerminated):
            return []
        out: list[ev.Event] = []
        try:
            if isinstance(event, quic_events.StreamDataReceived):
                self._receive_stream_data(event.stream_id, event.data, event.end_stream, out)
            elif isinstance(event, quic_events.StreamReset):
                self._receive_stream_reset(event.stream_id, event.error_code, out)
            elif isinstance(event, quic_events.StopSendingReceived):
                self._receive_stop_sending(event.stream_id, event.error_code, out)
            elif isinstance(event, quic_events.HandshakeCompleted):
                out.append(
                    ev.HandshakeCompleted(
                        alpn_protocol=event.alpn_protocol,
                        early_data_accepted=event.early_data_accepted,
                        session_resumed=event.session_resumed,
                    )
                )
            elif isinstance(event, quic_events.ConnectionTerminated):
                self.closed = True
                self._requests.clear()
                if not self._terminated_reported:
                    self._terminated_reported = True
                    out.append(
                        ev.ConnectionTerminated(
                            code=event.error_code, reason=event.reason_phrase, by_peer=True
                        )
                    )
        except RemoteProtocolError as exc:
            self._close_for(exc, out)
        return out

    def _close_for(self, exc: RemoteProtocolError, out: list[ev.Event]) -> None:
        """React to a connection-scope violation: CONNECTION_CLOSE with its code."""
        self.close(exc.code, exc.reason)
        out.append(ev.ConnectionTerminated(code=exc.code, reason=exc.reason, by_peer=False))

    def _receive_stream_data(
        self, stream_id: int, data: bytes, end_stream: bool, out: list[ev.Event]
    ) -> None:
        if stream_id & 2:
            self._receive_uni(stream_id, data, end_stream, out)
            return
        if stream_id & 1:
            # Section 3.1: server-initiated bidirectional streams are not used.
            raise connection_error(
                ErrorCode.QS_STREAM_CREATION_ERROR, "server-initiated bidirectional stream"
            )
        req = self._requests.get(stream_id)
        if req is None:
            if self.is_client or not self._is_new_request_stream(stream_id):
                return  # a request already finished and freed: late bytes are ignored
            req = self._open_server_request(stream_id, out)
            if req is None:
                return
        if req.discarding or req.reader is None:
            self._consume(stream_id, len(data))
            if end_stream:
                self._finish_recv(req)
            return
        frames = req.reader.feed(data, end_stream)
        delivered = 0
        for frame in frames:
            if req.discarding:
                break
            if self._receive_request_frame(req, frame, out):
                delivered += len(frame.data)  # type: ignore[union-attr]
        # Frame headers and control payloads are consumed now; DATA when the app says so.
        self._consume(stream_id, len(data) - delivered)
        if end_stream and not req.discarding:
            self._receive_request_fin(req, out)
        elif end_stream:
            self._finish_recv(req)

    def _is_new_request_stream(self, stream_id: int) -> bool:
        """Server: has this request stream never been seen? Streams can first appear out of
        order, so IDs below the highest seen that have not appeared are kept as gaps (at
        most QUIC's stream limit of them) instead of remembering every ID ever seen."""
        return stream_id > self._highest_request_id or stream_id in self._unseen_request_ids

    def _note_request_stream(self, stream_id: int) -> None:
        if stream_id > self._highest_request_id:
            self._unseen_request_ids.update(range(self._highest_request_id + 4, stream_id, 4))
            self._highest_request_id = stream_id
        else:
            self._unseen_request_ids.discard(stream_id)

    def _open_server_request(self, stream_id: int, out: list[ev.Event]) -> _Request | None:
        """Server: a new request stream; refuse it if over limits or after GOAWAY."""
        self._note_request_stream(stream_id)
        if self.goaway_sent is not None and stream_id >= self.goaway_sent:
            # Section 10.3: requests at or above the GOAWAY ID are rejected, retryable.
            self._abort(stream_id, ErrorCode.QS_REQUEST_REJECTED, recv=True, send=True)
            return None
        if len(self._requests) >= self.local_settings.max_concurrent_requests:
            self._abort(stream_id, ErrorCode.QS_EXCESSIVE_LOAD, recv=True, send=True)
            out.append(
                ev.StreamAbandoned(
                    stream_id=stream_id,
                    code=ErrorCode.QS_EXCESSIVE_LOAD,
                    reason="too many concurrent requests",
                )
            )
            return None
        req = _Request(
            stream_id=stream_id,
            reader=FrameReader(self.local_settings.max_frame_size),
            recv_state=MessageState.REQUEST_START,
            send_state=None,
        )
        self._requests[stream_id] = req
        if self._flow is not None:
            self._flow.pace_stream(stream_id)
        return req

    def _consume(self, stream_id: int, size: int) -> None:
        if self._flow is not None and size:
            self._flow.consume(stream_id, size)

    def data_consumed(self, stream_id: int, size: int) -> None:
        """The application is done with ``size`` bytes of DATA it received on a stream, so
        the peer may send that much more (only with ``flow``)."""
        self._consume(stream_id, size)

    def _receive_request_frame(self, req: _Request, frame: Frame, out: list[ev.Event]) -> bool:
        """Apply one frame; True if it was delivered to the application as DataReceived."""
        message_input = _frame_input(frame, req.op)
        if message_input is None:
            return False  # unknown frame types are skipped in every state (Section 13)
        if message_input in (MessageInput.SETTINGS, MessageInput.GOAWAY):
            raise connection_error(
                ErrorCode.QS_FRAME_UNEXPECTED, f"{message_input.value} on a request stream"
            )
        state = next_state(req.recv_state, message_input)
        if state is None:
            raise connection_error(
                ErrorCode.QS_FRAME_UNEXPECTED,
                f"{message_input.value} frame not allowed in {req.recv_state.value} "
                f"on stream {req.stream_id}",
            )
        req.recv_state = state
        sid = req.stream_id
        if isinstance(frame, DataFrame):
            req.body_received += len(frame.data)
            if req.body_expected is not None and req.body_received > req.body_expected:
                self._abandon(
                    req, ErrorCode.QS_MESSAGE_ERROR, "more DATA than RESPONSE length", out
                )
                return False
            out.append(ev.DataReceived(stream_id=sid, data=frame.data))
            return True
        elif isinstance(frame, ChecksumsFrame):
            out.append(
                ev.ChecksumsReceived(
                    stream_id=sid, first_block=frame.first_block, checksums=frame.checksums
                )
            )
        elif isinstance(frame, RequestFrame):
            req.op = frame.header.op
            req.send_state = response_start_state(frame.header.op)
            out.append(ev.RequestReceived(stream_id=sid, header=frame.header))
        elif isinstance(frame, ResponseFrame):
            if req.op == OP_GET:
                if frame.header.length is None:
                    self._abandon(
                        req, ErrorCode.QS_MESSAGE_ERROR, "GET RESPONSE without length", out
                    )
                    return False
                req.body_expected = frame.header.length
            out.append(ev.ResponseReceived(stream_id=sid, header=frame.header))
        elif isinstance(frame, ErrorFrame):
            out.append(ev.ErrorReceived(stream_id=sid, code=frame.code, reason=frame.reason))
        elif isinstance(frame, ListingFrame):
            out.append(ev.ListingReceived(stream_id=sid, listing=frame.listing))
        elif isinstance(frame, TrailerFrame):
            out.append(ev.TrailerReceived(stream_id=sid, trailer=frame.trailer))
        elif isinstance(frame, MalformedFrame):
            if frame.frame_type == FrameType.REQUEST:
                req.send_state = MessageState.PLAIN_START
            peer_reason = f"malformed {FrameType(frame.frame_type).name}"
            self._abandon(req, frame.code, frame.reason, out, peer_reason)
        return False

    def _receive_request_fin(self, req: _Request, out: list[ev.Event]) -> None:
        state = next_state(req.recv_state, MessageInput.FIN)
        if state is None:
            # Only the *_START states refuse a FIN (Section 9): the message is incomplete.
            assert req.recv_state in START_STATES
            self._abandon(
                req, ErrorCode.QS_REQUEST_INCOMPLETE, "stream ended before a message", out
            )
            self._finish_recv(req)
            return
        req.recv_state = state
        if req.body_expected is not None and req.body_received != req.body_expected:
            self._abandon(
                req,
                ErrorCode.QS_MESSAGE_ERROR,
                f"DATA total {req.body_received} != RESPONSE length {req.body_expected}",
                out,
            )
            self._finish_recv(req)
            return
        out.append(ev.StreamEnded(stream_id=req.stream_id))
        self._finish_recv(req)

    def _abandon(
        self,
        req: _Request,
        code: int,
        reason: str,
        out: list[ev.Event],
        peer_reason: str = "malformed request",
    ) -> None:
        """Give up on a request because the peer broke its message (a stream-scope error)."""
        req.discarding = True
        req.reader = None
        sid = req.stream_id
        # Section 4.4: a malformed REQUEST or TRAILER is answered with ERROR.
        if (
            not self.is_client
            and code == ErrorCode.QS_MESSAGE_ERROR
            and not req.send_finished
            and req.send_state is not None
            and next_state(req.send_state, MessageInput.ERROR)
        ):
            # The peer gets a fixed reason; parser details stay in the local event.
            self.quic.send_stream_data(
                sid, encode_frame(ErrorFrame(code, peer_reason)), end_stream=True
            )
            req.send_state = MessageState.CLOSED
            req.send_finished = True
        if not req.recv_finished:
            self.quic.stop_stream(sid, code)
        if not req.send_finished:
            self.quic.reset_stream(sid, code)
            req.send_finished = True
        out.append(ev.StreamAbandoned(stream_id=sid, code=code, reason=reason))
        self._maybe_free(req)

    def _finish_recv(self, req: _Request) -> None:
        req.recv_finished = True
        req.reader = None
        self._maybe_free(req)

    def _maybe_free(self, req: _Request) -> None:
        if req.recv_finished and req.send_finished:
            self._requests.pop(req.stream_id, None)
            if self._flow is not None:
                self._flow.forget_stream(req.stream_id)

    def _receive_stream_reset(self, stream_id: int, code: int, out: list[ev.Event]) -> None:
        if stream_id & 2:
            if stream_id == self._peer_control_id:
                raise connection_error(ErrorCode.QS_CLOSED_CRITICAL_STREAM, "control stream reset")
            self._uni.pop(stream_id, None)
            return
        req = self._requests.get(stream_id)
        if req is None:
            return
        req.discarding = True
        req.reader = None
        out.append(ev.StreamReset(stream_id=stream_id, code=code))
        self._finish_recv(req)

    def _receive_stop_sending(self, stream_id: int, code: int, out: list[ev.Event]) -> None:
        req = self._requests.get(stream_id)
        if stream_id & 2 or req is None:
            return
        # aioquic has already reset our sending side with the same code (RFC 9000, 3.5).
        req.send_finished = True
        out.append(ev.StopSendingReceived(stream_id=stream_id, code=code))
        self._maybe_free(req)

    # ----------------------------------------------------------- unidirectional streams

    def _receive_uni(
        self, stream_id: int, data: bytes, end_stream: bool, out: list[ev.Event]
    ) -> None:
        self._consume(stream_id, len(data))
        uni = self._uni.get(stream_id)
        if uni is None:
            uni = self._uni[stream_id] = _UniStream(prefix=bytearray())
        if uni.stream_type is None:
            uni.prefix += data
            decoded = decode_varint(uni.prefix, 0)
            if decoded is None:
                if end_stream:
                    self._uni.pop(stream_id, None)
                return
            uni.stream_type, start = decoded
            data = bytes(uni.prefix[start:])
            uni.prefix.clear()
            if uni.stream_type == StreamType.CONTROL:
                if self._peer_control_id is not None:
                    raise connection_error(
                        ErrorCode.QS_STREAM_CREATION_ERROR, "second control stream"
                    )
                self._peer_control_id = stream_id
                uni.reader = FrameReader(self.local_settings.max_frame_size)
            else:
                # Section 3.2: unknown stream types are ignored.
                self.quic.stop_stream(stream_id, ErrorCode.QS_STREAM_CREATION_ERROR)
        if uni.reader is None:
            if end_stream:
                self._uni.pop(stream_id, None)
            return
        for frame in uni.reader.feed(data, end_stream):
            self._receive_control_frame(uni, frame, out)
        if end_stream:
            raise connection_error(ErrorCode.QS_CLOSED_CRITICAL_STREAM, "control stream closed")

    def _receive_control_frame(self, uni: _UniStream, frame: Frame, out: list[ev.Event]) -> None:
        if not uni.settings_seen:
            if not isinstance(frame, SettingsFrame):
                raise connection_error(
                    ErrorCode.QS_MISSING_SETTINGS, "first control frame is not SETTINGS"
                )
            uni.settings_seen = True
            self.peer_settings = Settings.from_frame(frame)
            self.peer_settings_received = True
            out.append(ev.SettingsReceived(settings=self.peer_settings))
            return
        if isinstance(frame, UnknownFrame):
            return
        if isinstance(frame, GoawayFrame) and self.is_client:
            if self.goaway_received is not None and frame.stream_id > self.goaway_received:
                raise connection_error(ErrorCode.QS_ID_ERROR, "GOAWAY stream ID increased")
            self.goaway_received = frame.stream_id
            out.append(ev.GoawayReceived(stream_id=frame.stream_id))
            return
        name = type(frame).__name__.removesuffix("Frame").upper()
        raise connection_error(ErrorCode.QS_FRAME_UNEXPECTED, f"{name} on the control stream")

    # ------------------------------------------------------------------ sending

    def _request_for_send(self, stream_id: int) -> _Request | None:
        req = self._requests.get(stream_id)
        if req is not None:
            return None if req.send_finished else req
        if stream_id & 3 == 0 and (
            (self.is_client and stream_id < self.quic.get_next_available_stream_id())
            or (not self.is_client and stream_id <= self._highest_request_id)
        ):
            return None  # finished, reset or cancelled: a normal race, dropped
        raise LocalProtocolError(f"stream {stream_id} is not an open request stream")

    def _advance_send(self, req: _Request, message_input: MessageInput, end_stream: bool) -> None:
        req.send_state = self._send_state_after(req, [message_input], end_stream)

    def _send_state_after(
        self, req: _Request, message_inputs: Sequence[MessageInput], end_stream: bool
    ) -> MessageState:
        """The send state after ``message_inputs`` (and the FIN, with ``end_stream``), from
        the request's current one; raises LocalProtocolError if any step is not allowed
        (the request's state is left as it was)."""
        state = req.send_state
        if state is None:
            raise LocalProtocolError(f"stream {req.stream_id}: no request to answer yet")
        for message_input in message_inputs:
            after = next_state(state, message_input)
            if after is None:
                raise LocalProtocolError(
                    f"stream {req.stream_id}: cannot send {message_input.value} in {state.value}"
                )
            state = after
        if end_stream:
            fin_state = next_state(state, MessageInput.FIN)
            if fin_state is None:
                raise LocalProtocolError(
                    f"stream {req.stream_id}: cannot end the message in {state.value}"
                )
            state = fin_state
        return state

    def _check_frame_size(self, frame_type: FrameType, size: int) -> None:
        if size > self.peer_settings.max_frame_size:
            raise LocalProtocolError(
                f"{frame_type.name} payload of {size} bytes exceeds the peer's MAX_FRAME_SIZE "
                f"{self.peer_settings.max_frame_size}",
                ErrorCode.QS_EXCESSIVE_LOAD,
            )

    def _send_frame(
        self, req: _Request, message_input: MessageInput, frame: Frame, end_stream: bool
    ) -> None:
        wire = self._frame_wire(frame)
        self._advance_send(req, message_input, end_stream)
        self.quic.send_stream_data(req.stream_id, wire, end_stream)
        if end_stream:
            self._sent_fin(req)

    def _frame_wire(self, frame: Frame) -> bytes:
        """``frame`` as it goes on the wire, within the peer's MAX_FRAME_SIZE."""
        frame_type, payload = encode_payload(frame)
        self._check_frame_size(FrameType(frame_type), len(payload))
        return encode_frame_header(frame_type, len(payload)) + payload

    def _sent_fin(self, req: _Request) -> None:
        req.send_finished = True
        self._maybe_free(req)

    def send_request(self, header: RequestHeader, *, end_stream: bool | None = None) -> int:
        """Client: open a request stream and send ``header``; returns the stream ID.

        The FIN follows at once unless the op is PUT (whose body follows) or ``end_stream``
        says otherwise.
        """
        if not self.is_client:
            raise LocalProtocolError("only a client sends requests")
        if self.goaway_received is not None:
            raise LocalProtocolError("the server sent GOAWAY: open a new connection")
        if end_stream is None:
            end_stream = header.op != OP_PUT
        stream_id = self.quic.get_next_available_stream_id()
        req = _Request(
            stream_id=stream_id,
            reader=FrameReader(self.local_settings.max_frame_size),
            recv_state=response_start_state(header.op),
            send_state=MessageState.REQUEST_START,
            op=header.op,
        )
        message_input = input_for_frame_type(FrameType.REQUEST, header.op)
        self._requests[stream_id] = req
        if self._flow is not None:
            self._flow.pace_stream(stream_id)
        try:
            self._send_frame(req, message_input, RequestFrame(header), end_stream)
        except LocalProtocolError:
            del self._requests[stream_id]
            raise
        return stream_id

    def send_response(
        self, stream_id: int, header: ResponseHeader, *, end_stream: bool = False
    ) -> bool:
        """Server: send the RESPONSE of a request. Returns False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        self._send_frame(req, MessageInput.RESPONSE, ResponseFrame(header), end_stream)
        return True

    def send_error(self, stream_id: int, code: int, reason: str = "") -> bool:
        """Server: fail a request with an ERROR frame and the FIN. False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        reason_bytes = reason.encode("utf-8")[:1024].decode("utf-8", "ignore")
        self._send_frame(req, MessageInput.ERROR, ErrorFrame(int(code), reason_bytes), True)
        return True

    def send_listing(self, stream_id: int, listing: Listing) -> bool:
        """Server: answer a LIST with one LISTING frame and the FIN. False if gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        self._send_frame(req, MessageInput.LISTING, ListingFrame(listing), True)
        return True

    def send_checksums(self, stream_id: int, first_block: int, checksums: Sequence[int]) -> bool:
        """Send CHECKSUMS for blocks ``first_block, first_block + 1, ...``, split into as many
        frames as the peer's MAX_FRAME_SIZE needs. False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        for frame in self._checksums_frames(first_block, checksums):
            self._send_frame(req, MessageInput.CHECKSUMS, frame, False)
        return True

    def _checksums_frames(self, first_block: int, checksums: Sequence[int]) -> list[ChecksumsFrame]:
        per_frame = max(1, (self.peer_settings.max_frame_size - 8) // 4)
        return [
            ChecksumsFrame(first_block + start, tuple(checksums[start : start + per_frame]))
            for start in range(0, len(checksums), per_frame)
        ]

    def send_whole_response(
        self,
        stream_id: int,
        header: ResponseHeader,
        first_block: int,
        checksums: Sequence[int],
        body: Buffer,
    ) -> bool:
        """Server: a whole (small) response in one write to the stream: the RESPONSE,
        CHECKSUMS for blocks ``first_block`` on (none if empty), ``body`` in one DATA frame
        (none if empty) and the FIN. The same frames, state rules and errors as
        :meth:`send_response`, :meth:`send_checksums`, :meth:`send_data` and
        :meth:`end_stream` called in turn, for a quarter of the calls into QUIC; ``body``
        is copied. False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        frames: list[Frame] = [ResponseFrame(header)]
        inputs = [MessageInput.RESPONSE]
        if checksums:
            sums = self._checksums_frames(first_block, checksums)
            frames.extend(sums)
            inputs.extend([MessageInput.CHECKSUMS] * len(sums))
        parts = [self._frame_wire(frame) for frame in frames]
        if len(body):
            inputs.append(MessageInput.DATA)
            parts += [encode_data_header(len(body)), bytes(body)]
        req.send_state = self._send_state_after(req, inputs, True)
        self.quic.send_stream_data(stream_id, b"".join(parts), True)
        self._sent_fin(req)
        return True

    def send_data(
        self,
        stream_id: int,
        data: Buffer,
        *,
        end_stream: bool = False,
        release: Callable[[], None] | None = None,
    ) -> bool:
        """Send object bytes in one DATA frame (a GET body, or a PUT body), optionally
        ending the message. ``data`` is not copied by this layer. False if the stream is gone.

        With ``release``, the caller hands ``data`` over: it stays unchanged until
        ``release`` is called, and the transport (if it can) sends straight from it instead
        of copying. ``release`` is called only if this returns True.
        """
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        self._advance_send(req, MessageInput.DATA, end_stream)
        size = len(data)
        if size == 0:
            if end_stream:
                self.quic.send_stream_data(stream_id, b"", True)
        elif size <= _SMALL_DATA:
            self.quic.send_stream_data(
                stream_id, encode_data_header(size) + bytes(data), end_stream
            )
        else:
            self.quic.send_stream_data(stream_id, encode_data_header(size))
            send_view = getattr(self.quic, "send_stream_view", None)
            if release is not None and send_view is not None:
                send_view(stream_id, memoryview(data), release, end_stream)
                release = None
            else:
                self.quic.send_stream_data(stream_id, data, end_stream)  # type: ignore[arg-type]
        if release is not None:
            release()
        if end_stream:
            self._sent_fin(req)
        return True

    def send_trailer(self, stream_id: int, trailer: Trailer) -> bool:
        """Client: end a PUT body with a TRAILER and the FIN. False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        self._send_frame(req, MessageInput.TRAILER, TrailerFrame(trailer), True)
        return True

    def end_stream(self, stream_id: int) -> bool:
        """Send the FIN that ends this side's message. False if the stream is gone."""
        req = self._request_for_send(stream_id)
        if req is None:
            return False
        if req.send_state is None:
            raise LocalProtocolError(f"stream {stream_id}: no request to answer yet")
        state = next_state(req.send_state, MessageInput.FIN)
        if state is None:
            raise LocalProtocolError(
                f"stream {stream_id}: cannot end the message in {req.send_state.value}"
            )
        req.send_state = state
        self.quic.send_stream_data(stream_id, b"", True)
        self._sent_fin(req)
        return True

    def cancel_request(self, stream_id: int, code: int = ErrorCode.QS_REQUEST_CANCELLED) -> None:
        """Abandon a request from this side (spec Section 10.1): STOP_SENDING and
        RESET_STREAM with ``code`` where each direction is still open. Idempotent."""
        req = self._requests.get(stream_id)
        if req is None:
            return
        req.discarding = True
        req.reader = None
        if not req.recv_finished:
            self.quic.stop_stream(stream_id, code)
        if not req.send_finished:
            self.quic.reset_stream(stream_id, code)
            req.send_finished = True
        self._maybe_free(req)

    def _abort(self, stream_id: int, code: int, *, recv: bool, send: bool) -> None:
        if recv:
            self.quic.stop_stream(stream_id, code)
        if send:
            self.quic.reset_stream(stream_id, code)

    def send_goaway(self, stream_id: int | None = None) -> int:
        """Server: start a graceful shutdown (spec Section 10.3). ``stream_id`` defaults to
        the first request stream not yet seen. Returns the ID sent."""
        if self.is_client:
            raise LocalProtocolError("only a server sends GOAWAY")
        if stream_id is None:
            stream_id = self._highest_request_id + 4
        if stream_id % 4:
            raise LocalProtocolError("GOAWAY must name a client-initiated bidirectional stream")
        if self.goaway_sent is not None:
            stream_id = min(stream_id, self.goaway_sent)
        self.goaway_sent = stream_id
        self.quic.send_stream_data(self._control_id, encode_frame(GoawayFrame(stream_id)))
        return stream_id

    def pending_requests_at_or_above(self, stream_id: int) -> Iterable[int]:
        """Open request streams with IDs of at least ``stream_id`` (to reject on shutdown)."""
        return [sid for sid in self._requests if sid >= stream_id]

    def close(self, code: int = ErrorCode.QS_NO_ERROR, reason: str = "") -> None:
        """Close the connection with a quicstore code (CONNECTION_CLOSE type 0x1d)."""
        if self.closed:
            return
        self.closed = True
        self._terminated_reported = True
        self._requests.clear()
        self.quic.close(error_code=int(code), reason_phrase=reason)


__all__ = ["ErrorScope", "QuicLike", "QuicstoreConnection"]
