"""The one place that reads (and adjusts) aioquic internals. Pinned to aioquic 1.7.2.

quicstore needs what aioquic does not expose: how many bytes wait in a stream's send
buffer (to bound read-ahead), the live path estimate (congestion window, RTT, bytes in
flight, loss: for prefetch planning), and receive windows that follow what the
application has consumed instead of what arrived (aioquic doubles its windows as data
arrives, which gives a slow consumer no back-pressure). Everything here is checked by
tests/transport/test_compat.py against the pinned version.
"""

from __future__ import annotations

import aioquic
from aioquic.buffer import size_uint_var
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionState,
)
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509

from ..plan.prefetch import PathEstimate

TESTED_AIOQUIC_VERSIONS = frozenset({"1.7.2"})
"""aioquic versions whose internals this module was checked against."""

if aioquic.__version__ not in TESTED_AIOQUIC_VERSIONS:  # pragma: no cover
    raise ImportError(
        f"quicstore's transport reads aioquic internals and was tested with aioquic "
        f"{', '.join(sorted(TESTED_AIOQUIC_VERSIONS))}; found {aioquic.__version__}"
    )


def path_estimate(quic: QuicConnection) -> PathEstimate:
    """The live path estimate of a connection (aioquic's recovery state)."""
    recovery = quic._loss
    cc = recovery._cc
    min_rtt = recovery._rtt_min if recovery._rtt_initialized else 0.0
    smoothed = recovery._rtt_smoothed if recovery._rtt_initialized else 0.0
    return PathEstimate(
        congestion_window=int(cc.congestion_window),
        bytes_in_flight=int(cc.bytes_in_flight),
        smoothed_rtt=float(smoothed),
        min_rtt=float(min_rtt if min_rtt != float("inf") else 0.0),
        packets_lost=int(getattr(quic, "packets_lost", 0)),
        max_datagram_size=int(quic._max_datagram_size),
    )


def bytes_in_flight(quic: QuicConnection) -> int:
    """Bytes sent and neither acknowledged nor declared lost (all packet spaces)."""
    return int(quic._loss._cc.bytes_in_flight)


def send_buffered(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream and not yet acknowledged by the peer (0 if unknown)."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    return len(stream.sender._buffer)


def is_closing(quic: QuicConnection) -> bool:
    """True once the connection is closing, draining or closed (nothing more will be
    acknowledged)."""
    return quic._state in (
        QuicConnectionState.CLOSING,
        QuicConnectionState.DRAINING,
        QuicConnectionState.TERMINATED,
    )


def finish_close(quic: QuicConnection) -> None:
    """End a closing connection now instead of after its draining period (3 PTO): its
    ConnectionTerminated event is queued and its qlog trace written."""
    if quic._state not in (QuicConnectionState.TERMINATED,) and quic._close_event is not None:
        quic._close_end()


def unacknowledged_bytes(quic: QuicConnection) -> int:
    """Stream bytes sent or queued on any stream and not yet acknowledged by the peer."""
    return sum(len(stream.sender._buffer) for stream in quic._streams.values())


def peer_stream_credit(quic: QuicConnection, stream_id: int) -> int:
    """Bytes the peer still allows on a stream beyond what was sent (stream flow control)."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    return max(0, stream.max_stream_data_remote - stream.sender.highest_offset)


class AppPacedQuicConnection(QuicConnection):
    """A QuicConnection whose receive windows follow application consumption.

    For streams registered with :meth:`pace_stream`, MAX_STREAM_DATA is raised to
    ``consumed + stream_window`` only as :meth:`consume` reports bytes the application has
    finished with; MAX_DATA likewise follows the total consumed plus ``connection_window``.
    Unregistered streams keep aioquic's behaviour (the window doubles as data arrives).
    A slow consumer therefore holds the peer to at most one window of unconsumed data per
    stream, and one connection window in all.
    """

    def __init__(
        self,
        *args: object,
        stream_window: int,
        connection_window: int,
        request_client_certificate: bool = False,
        max_streams_bidi: int | None = None,
        **kwargs: object,
    ) -> None:
        """Windows in bytes; the configuration's ``max_stream_data`` and ``max_data`` should
        equal them so the initial and the later windows agree. ``request_client_certificate``
        (servers): ask the client for a certificate in the handshake (aioquic checks the
        client's proof of possession; the caller verifies the chain, see
        :func:`peer_certificate_chain`)."""
        self.request_client_certificate = request_client_certificate
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if max_streams_bidi is not None:
            # initial_max_streams_bidi: how many requests the peer may have open at once
            self._local_max_streams_bidi.value = max_streams_bidi
            self._local_max_streams_bidi.sent = max_streams_bidi
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.packets_lost = 0
        """Packets declared lost over the connection's life."""
        self._consumed: dict[int, int] = {}
        self._connection_consumed = 0
        self._pacing_connection = False
        self._forgotten: set[int] = set()
        on_lost = self._loss._on_packets_lost

        def count_lost(*, packets: list[object], **kwargs: object) -> None:
            packets = list(packets)
            if kwargs.get("congestion_event", True):
                self.packets_lost += len(packets)
            on_lost(packets=packets, **kwargs)  # type: ignore[arg-type]

        self._loss._on_packets_lost = count_lost  # type: ignore[method-assign, assignment]

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.request_client_certificate:
            self.tls._request_client_certificate = True

    def pace_stream(self, stream_id: int) -> None:
        """Put a stream's receive window (and the connection's) under application control."""
        self._consumed.setdefault(stream_id, 0)
        self._pacing_connection = True

    def consume(self, stream_id: int, size: int) -> None:
        """The application is done with ``size`` more received bytes of ``stream_id``."""
        if stream_id in self._forgotten:
            return
        if stream_id in self._consumed:
            self._consumed[stream_id] += size
        self._connection_consumed += size

    def forget_stream(self, stream_id: int) -> None:
        """Stop pacing a finished stream: what it received and the application never
        reported counts as consumed, so the connection window does not shrink."""
        consumed = self._consumed.pop(stream_id, None)
        if consumed is None:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._connection_consumed += max(0, stream.receiver.highest_offset - consumed)
        self._forgotten.add(stream_id)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        stream_id = stream.stream_id
        consumed = self._consumed.get(stream_id) if stream_id is not None else None
        if consumed is None or stream_id is None:
            super()._write_stream_limits(builder, space, stream)
            return
        target = consumed + self.stream_window
        # Raise in steps of a quarter window so that MAX_STREAM_DATA frames stay rare.
        if stream.max_stream_data_local and (
            target - stream.max_stream_data_local >= self.stream_window // 4
        ):
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_stream_frame(
        self,
        builder: QuicPacketBuilder,
        space: QuicPacketSpace,
        stream: QuicStream,
        max_offset: int,
    ) -> int:
        """aioquic 1.7.2 writes the STREAM frame's Length as a 2-byte integer, which breaks
        frames over 16383 bytes (datagrams above ~16 KB). This writes a 4-byte one."""
        assert stream.stream_id is not None
        frame_overhead = (
            5
            + size_uint_var(stream.stream_id)
            + (size_uint_var(stream.sender.next_offset) if stream.sender.next_offset else 0)
        )
        previous_send_highest = stream.sender.highest_offset
        frame = stream.sender.get_frame(builder.remaining_flight_space - frame_overhead, max_offset)
        if frame is None:
            return 0
        frame_type = QuicFrameType.STREAM_BASE | 2
        if frame.offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        buf = builder.start_frame(
            frame_type,
            capacity=frame_overhead,
            handler=stream.sender.on_data_delivery,
            handler_args=(frame.offset, frame.offset + len(frame.data), frame.fin),
        )
        buf.push_uint_var(stream.stream_id)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        buf.push_uint32(len(frame.data) | 0x80000000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None and builder.quic_logger_frames is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_stream_frame(frame, stream_id=stream.stream_id)
            )
        return stream.sender.highest_offset - previous_send_highest

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        if not self._pacing_connection:
            super()._write_connection_limits(builder, space)
            return
        max_data = self._local_max_data
        # The application reports every byte it is done with, paced stream or not.
        target = self._connection_consumed + self.connection_window
        if target - max_data.value >= self.connection_window // 4:
            max_data.value = target
        # Let aioquic write MAX_DATA and MAX_STREAMS, with its doubling kept out of reach.
        saved_used = max_data.used
        max_data.used = min(max_data.used, max_data.value // 2)
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = saved_used


__all__ = [
    "CONNECTION_LIMIT_FRAME_CAPACITY",
    "AppPacedQuicConnection",
    "PathEstimate",
    "path_estimate",
    "peer_stream_credit",
    "send_buffered",
]


def peer_certificate_chain(quic: QuicConnection) -> list[x509.Certificate]:
    """The peer's certificate followed by the intermediates it sent ([] if none)."""
    context = quic.tls
    if context is None or context._peer_certificate is None:
        return []
    return [context._peer_certificate, *context._peer_certificate_chain]


def peer_certificate_der(quic: QuicConnection) -> bytes | None:
    """The DER bytes of the certificate the peer presented in the handshake, if any."""
    from cryptography.hazmat.primitives.serialization import Encoding

    certificate = quic.tls._peer_certificate if quic.tls is not None else None
    return None if certificate is None else certificate.public_bytes(Encoding.DER)


def encode_initial_close(
    version: int, client_dcid: bytes, client_scid: bytes, error_code: int
) -> bytes:
    """A server Initial packet that closes a connection attempt with a transport error
    (e.g. CONNECTION_REFUSED), keyed from the client's Destination Connection ID."""
    from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
    from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import QuicPacketType

    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=TRANSPORT_CLOSE_FRAME_CAPACITY
    )
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return datagrams[0]
