"""The one place that reads (and adjusts) aioquic internals. Pinned to aioquic 1.7.2.

quicstore needs what aioquic does not expose: how many bytes wait in a stream's send
buffer (to bound read-ahead), the live path estimate (congestion window, RTT, bytes in
flight, loss: for prefetch planning), and receive windows that follow what the
application has consumed instead of what arrived (aioquic doubles its windows as data
arrives, which gives a slow consumer no back-pressure). Everything here is checked by
tests/transport/test_compat.py against the pinned version.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Callable
from typing import Any, cast

import aioquic
import aioquic.quic.crypto
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic._crypto import CryptoError, HeaderProtection
from aioquic.buffer import size_uint_var
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    END_STATES,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    NetworkAddress,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicNetworkPath,
    QuicReceiveContext,
    stream_is_client_initiated,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    QuicStreamFrame,
    pull_quic_transport_parameters,
    push_ack_frame,
)
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicPacketBuilderStop,
    QuicSentPacket,
)
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import (
    MAX_ACK_RANGES,
    QuicPacketPacer,
    QuicPacketRecovery,
    QuicPacketSpace,
)
from aioquic.quic.stream import FinalSizeError, QuicStream, QuicStreamSender, StreamFinishedError
from cryptography import x509

from ..plan.prefetch import PathEstimate
from .pmtud import BASE_SIZE, PmtuSearch

TESTED_AIOQUIC_VERSIONS = frozenset({"1.7.2"})
"""aioquic versions whose internals this module was checked against."""

log = logging.getLogger("quicstore.transport")

if aioquic.__version__ not in TESTED_AIOQUIC_VERSIONS:  # pragma: no cover
    raise ImportError(
        f"quicstore's transport reads aioquic internals and was tested with aioquic "
        f"{', '.join(sorted(TESTED_AIOQUIC_VERSIONS))}; found {aioquic.__version__}"
    )


class FastHeaderProtection(HeaderProtection):
    """aioquic's header protection with one copy of the packet instead of three on send
    and a copy of the header alone (not the whole packet) on receive. Same results: only
    the first byte and the packet number are masked, so only they are copied to change.
    """

    def apply(self, plain_header: bytes, protected_payload: bytes) -> bytes:
        """The packet with its header protected: ``plain_header`` + ``protected_payload``."""
        pn_length = (plain_header[0] & 0x03) + 1
        pn_offset = len(plain_header) - pn_length
        sample_offset = _PACKET_NUMBER_LENGTH_MAX - pn_length
        mask = self._mask(protected_payload[sample_offset : sample_offset + _SAMPLE_LENGTH])
        header = bytearray(plain_header)
        header[0] ^= mask[0] & (0x0F if header[0] & 0x80 else 0x1F)
        for i in range(pn_length):
            header[pn_offset + i] ^= mask[1 + i]
        return bytes(header) + protected_payload

    def remove(self, packet: bytes, pn_offset: int) -> tuple[bytes, int]:
        """The unprotected header (through the packet number) and the truncated number."""
        sample_offset = pn_offset + _PACKET_NUMBER_LENGTH_MAX
        if sample_offset + _SAMPLE_LENGTH > len(packet):
            raise CryptoError("Packet is too short to sample")
        mask = self._mask(packet[sample_offset : sample_offset + _SAMPLE_LENGTH])
        header = bytearray(packet[:sample_offset])
        header[0] ^= mask[0] & (0x0F if header[0] & 0x80 else 0x1F)
        pn_length = (header[0] & 0x03) + 1
        pn_truncated = 0
        for i in range(pn_length):
            header[pn_offset + i] ^= mask[1 + i]
            pn_truncated = header[pn_offset + i] | (pn_truncated << 8)
        return bytes(header[: pn_offset + pn_length]), pn_truncated


_PACKET_NUMBER_LENGTH_MAX = 4
_SAMPLE_LENGTH = 16


# -- packet protection: the native path (quicstore._native) or aioquic's Python one

_StockAEAD = aioquic.quic.crypto.AEAD  # type: ignore[attr-defined]
_StockCryptoContext = aioquic.quic.crypto.CryptoContext
_native: Any = None
_native_unavailable = ""
try:
    from .. import _native  # type: ignore[attr-defined, no-redef]
except ImportError as exc:  # no compiler or libcrypto headers when installed
    _native_unavailable = str(exc)

NATIVE_SETTING = "QUICSTORE_NATIVE"
"""Environment setting: ``0`` (or ``off``) forces the pure-Python packet path, ``1`` (or
``on``) requires the native one (import fails without it), unset or ``auto`` takes the
native path when quicstore._native was built."""


class NativeCryptoContext(_StockCryptoContext):
    """aioquic's CryptoContext with each packet's AEAD and header protection done in one
    call into quicstore._native (its AEAD and HeaderProtection objects are native too: aioquic
    builds them by name when keys are installed, and hands AEADs over on key updates). Same
    bytes on the wire, same errors (CryptoError) as the Python path."""

    def encrypt_packet(
        self, plain_header: bytes, plain_payload: bytes, packet_number: int
    ) -> bytes:
        """The protected packet (``plain_header`` + ``plain_payload`` + 16-byte tag)."""
        assert self.aead is not None, "Encryption key is not available"
        return _native.seal(  # type: ignore[no-any-return]
            self.aead, self.hp, plain_header, plain_payload, packet_number
        )

    def decrypt_packet(
        self, packet: bytes, encrypted_offset: int, expected_packet_number: int
    ) -> tuple[bytes, bytes, int, bool]:
        """(plain header, payload, packet number, whether the peer changed key phase)."""
        if self.aead is None:
            raise aioquic.quic.crypto.KeyUnavailableError("Decryption key is not available")
        header, payload, number = _native.open(
            self.aead, self.hp, packet, encrypted_offset, expected_packet_number, self.key_phase
        )
        if payload is not None:
            return header, payload, number, False
        # The peer moved to the next key phase (RFC 9001 section 6): aioquic's key schedule.
        crypto = aioquic.quic.crypto.next_key_phase(self)
        assert crypto.aead is not None
        payload = crypto.aead.decrypt(packet[len(header) :], header, number)
        return header, payload, number, True


def use_native_packet_path(enabled: bool) -> None:
    """Protect the packets of connections whose keys are installed from now on with the
    native path (``enabled``) or aioquic's Python one (with :class:`FastHeaderProtection`).
    Switch only while no connection is open. Raises ImportError if the native path was asked
    for and quicstore._native is missing."""
    module = aioquic.quic.crypto
    if enabled:
        if _native is None:
            raise ImportError(f"quicstore._native is not available: {_native_unavailable}")
        module.AEAD = _native.AEAD  # type: ignore[attr-defined]
        module.HeaderProtection = _native.HeaderProtection  # type: ignore[attr-defined]
        module.CryptoContext = NativeCryptoContext  # type: ignore[misc]
    else:
        module.AEAD = _StockAEAD  # type: ignore[attr-defined]
        module.HeaderProtection = FastHeaderProtection  # type: ignore[attr-defined]
        module.CryptoContext = _StockCryptoContext  # type: ignore[misc]


def native_packet_path() -> bool:
    """True if new connections protect their packets on the native path."""
    return aioquic.quic.crypto.CryptoContext is NativeCryptoContext


def native_unavailable_reason() -> str:
    """Why quicstore._native could not be imported ("" if it was)."""
    return _native_unavailable


def _select_packet_path() -> None:
    setting = os.environ.get(NATIVE_SETTING, "auto").strip().lower()
    if setting in ("0", "off", "false", "no"):
        use_native_packet_path(False)
        log.info("packet protection: pure Python (%s=%s)", NATIVE_SETTING, setting)
    elif setting in ("1", "on", "true", "yes") or _native is not None:
        use_native_packet_path(True)
        log.info("packet protection: native (quicstore._native, OpenSSL)")
    else:
        use_native_packet_path(False)
        log.warning(
            "packet protection: pure Python, slower (quicstore._native unavailable: %s; "
            "install gcc and libssl-dev, then reinstall quicstore)",
            _native_unavailable,
        )


# aioquic's CryptoPair and CryptoContext look these classes up in their module when keys
# are installed.
_select_packet_path()


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
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


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


def stream_data_waiting(quic: QuicConnection) -> bool:
    """True if some stream has data (or a FIN, or a reset) written and not yet sent (flow
    control or the congestion window holding it back, or a transmit not yet run).
    aioquic's ``buffer_is_empty`` is no guide: it turns true only at the next pass that
    finds nothing left to send."""
    for stream in quic._streams_queue:
        sender = stream.sender
        if len(sender._pending) or sender._pending_eof or sender.reset_pending:
            return True
    return False


def unacknowledged_bytes(quic: QuicConnection) -> int:
    """Stream bytes sent or queued on any stream and not yet acknowledged by the peer."""
    return sum(
        stream.sender._buffer_stop - stream.sender._buffer_start
        for stream in quic._streams.values()
    )


def peer_stream_credit(quic: QuicConnection, stream_id: int) -> int:
    """Bytes the peer still allows on a stream beyond what was sent (stream flow control)."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    return max(0, stream.max_stream_data_remote - stream.sender.highest_offset)


CONTINUATION_BUFFERS = 8
"""Buffers after the current one a native burst's packets may continue into without a copy
(quicstore._native's limit): a read's tail, a DATA frame's header and the next read take 2."""


class ChunkedStreamSender(QuicStreamSender):
    """A stream's send side that keeps written data as the chunks it was written in.

    aioquic's sender appends every write to one ``bytearray``, deletes acknowledged bytes
    from its front and copies each frame out twice (a ``bytearray`` slice, then ``bytes``);
    for a stream of large writes that is two extra copies of every byte, reallocations as
    the buffer grows, and page faults. Here a write is kept as one chunk (copied once if the
    caller's buffer is mutable, or not at all when the caller hands the buffer over with
    :meth:`write_view`), a frame is one slice of a chunk, and a chunk is dropped (its owner
    told) once every byte of it is acknowledged. Offsets, pending and acknowledged ranges,
    FIN and reset handling are aioquic's own.
    """

    def __init__(self, stream_id: int | None, writable: bool) -> None:
        super().__init__(stream_id, writable)
        self._chunk_offsets: list[int] = []
        """Stream offset of each chunk's first byte (ascending)."""
        self._chunks: list[bytes | memoryview] = []
        self._owners: list[Callable[[], None] | None] = []
        """For a chunk handed over with :meth:`write_view`: what to call when it is dropped."""
        self._head = 0
        """Index of the first chunk still holding unacknowledged bytes."""

    def write(self, data: bytes, end_stream: bool = False) -> None:
        """Queue ``data`` (any bytes-like object; copied unless it is ``bytes``)."""
        if self._buffer_fin is not None:
            raise RuntimeError("Cannot send data after FIN")
        if self._reset_error_code is not None:
            raise RuntimeError("Cannot send data after the stream was reset")
        self._append(data if type(data) is bytes else bytes(data), None, end_stream)

    def write_view(
        self, data: memoryview, release: Callable[[], None], end_stream: bool = False
    ) -> None:
        """Queue ``data`` without copying it: the caller must not change the bytes until
        ``release`` is called (once every byte is acknowledged, or the stream is reset).
        ``release`` is not called if the connection is dropped first."""
        if self._buffer_fin is not None:
            raise RuntimeError("Cannot send data after FIN")
        if self._reset_error_code is not None:
            raise RuntimeError("Cannot send data after the stream was reset")
        self._append(data, release, end_stream)

    def _append(
        self, chunk: bytes | memoryview, owner: Callable[[], None] | None, end_stream: bool
    ) -> None:
        size = len(chunk)
        if size:
            self.buffer_is_empty = False
            self._pending.add(self._buffer_stop, self._buffer_stop + size)
            self._chunk_offsets.append(self._buffer_stop)
            self._chunks.append(chunk)
            self._owners.append(owner)
            self._buffer_stop += size
        elif owner is not None:
            owner()
        if end_stream:
            self.buffer_is_empty = False
            self._buffer_fin = self._buffer_stop
            self._pending_eof = True

    def _slice(self, start: int, stop: int) -> bytes:
        """The queued bytes at stream offsets ``[start, stop)``."""
        index = bisect.bisect_right(self._chunk_offsets, start, self._head) - 1
        chunk = self._chunks[index]
        lo = start - self._chunk_offsets[index]
        if lo + (stop - start) <= len(chunk):
            if lo == 0 and stop - start == len(chunk) and type(chunk) is bytes:
                return chunk
            return bytes(chunk[lo : lo + stop - start])
        parts = [chunk[lo:]]
        need = stop - start - len(parts[0])
        while need > 0:
            index += 1
            piece = self._chunks[index][:need]
            parts.append(piece)
            need -= len(piece)
        return b"".join(parts)

    def get_frame(self, max_size: int, max_offset: int | None = None) -> QuicStreamFrame | None:
        """The next frame to send, at most ``max_size`` data bytes and not past
        ``max_offset`` (aioquic's contract)."""
        assert self._reset_error_code is None, "cannot call get_frame() after reset()"
        if max_size < 0:
            return None
        try:
            pending = self._pending[0]
        except IndexError:
            if self._pending_eof and self._buffer_fin is not None:
                self._pending_eof = False
                return QuicStreamFrame(fin=True, offset=self._buffer_fin)
            self.buffer_is_empty = True
            return None
        start = pending.start
        stop = min(pending.stop, start + max_size)
        if max_offset is not None and stop > max_offset:
            stop = max_offset
        if stop <= start:
            return None
        frame = QuicStreamFrame(data=self._slice(start, stop), offset=start)
        self._pending.subtract(start, stop)
        if stop > self.highest_offset:
            self.highest_offset = stop
        if self._buffer_fin == stop:
            frame.fin = True
            self._pending_eof = False
        return frame

    def next_pending_view(
        self, max_offset: int, join: int = 0, reach: int = 0
    ) -> tuple[int, bytes | memoryview, tuple[memoryview, ...] | None, bool, bool] | None:
        """The next bytes to send, not past ``max_offset``, as (stream offset, the bytes, the
        bytes right after them in the following buffers or None, whether they end the
        stream, whether more bytes are pending right after them); None if no data is
        pending. The bytes are a view within one chunk, except that a view shorter than
        ``reach`` bytes (at least ``join``) that more pending bytes follow is continued by
        views of the following chunks (not copied; up to CONTINUATION_BUFFERS of them, such
        as DATA frames' headers and the next reads) towards ``reach`` bytes, as long as they
        make ``join`` bytes in all or reach the end of what is pending; if they do not, the
        bytes are joined with the following ones (copied) up to ``join`` bytes. Nothing is
        marked sent: see :meth:`mark_sent`."""
        reach = max(reach, join)
        try:
            pending = self._pending[0]
        except IndexError:
            return None
        start, stop = pending.start, min(pending.stop, max_offset)
        if stop <= start:
            return None
        index = bisect.bisect_right(self._chunk_offsets, start, self._head) - 1
        chunk_start = self._chunk_offsets[index]
        chunk = self._chunks[index]
        chunk_stop = chunk_start + len(chunk)
        if chunk_stop - start < reach and stop > chunk_stop:
            following: list[memoryview] = []
            end = chunk_stop
            chunks = self._chunks
            while end < stop and end - start < reach and len(following) < CONTINUATION_BUFFERS:
                index += 1
                piece = memoryview(chunks[index])[: stop - end]
                following.append(piece)
                end += len(piece)
            if end - start >= join or end == stop:
                return (
                    start,
                    memoryview(chunk)[start - chunk_start :],
                    tuple(following),
                    self._buffer_fin == end,
                    end < stop,
                )
            end = min(stop, start + join)
            return start, self._slice(start, end), None, self._buffer_fin == end, end < stop
        end = min(stop, chunk_stop)
        view = memoryview(chunk)[start - chunk_start : end - chunk_start]
        return start, view, None, self._buffer_fin == end, end < stop

    def mark_sent(self, start: int, stop: int, fin: bool) -> None:
        """Bytes ``[start, stop)`` (and the FIN, if ``fin``) went out in STREAM frames built
        outside :meth:`get_frame`: the same bookkeeping it does."""
        self._pending.subtract(start, stop)
        if stop > self.highest_offset:
            self.highest_offset = stop
        if fin:
            self._pending_eof = False

    def on_data_delivery(
        self, delivery: QuicDeliveryState, start: int, stop: int, fin: bool
    ) -> None:
        """A frame of ``[start, stop)`` was acknowledged or lost."""
        if delivery == QuicDeliveryState.ACKED and stop > start and self._reset_error_code is None:
            self._acked.add(start, stop)
            first = self._acked[0]
            if first.start == self._buffer_start:
                self._acked.shift()
                self._buffer_start = first.stop
                self._drop_acknowledged_chunks()
            if fin:
                self._acked_fin = True
            if self._buffer_start == self._buffer_fin and self._acked_fin:
                self.is_finished = True
            return
        super().on_data_delivery(delivery, start, stop, fin)

    def reset(self, error_code: int) -> None:
        """Abort sending (aioquic's reset); buffers handed over are released at once."""
        super().reset(error_code)
        if self._reset_error_code is not None:
            self._drop_chunks(len(self._chunks))

    def _drop_acknowledged_chunks(self) -> None:
        offsets, chunks = self._chunk_offsets, self._chunks
        head = self._head
        while head < len(chunks) and offsets[head] + len(chunks[head]) <= self._buffer_start:
            head += 1
        self._drop_chunks(head)

    def _drop_chunks(self, upto: int) -> None:
        """Forget chunks before index ``upto``, telling owners of handed-over ones."""
        chunks, owners = self._chunks, self._owners
        for index in range(self._head, upto):
            chunks[index] = b""
            owner = owners[index]
            if owner is not None:
                owners[index] = None
                owner()
        head = upto
        if head > 64 and head * 2 > len(chunks):
            del self._chunk_offsets[:head], chunks[:head], owners[:head]
            head = 0
        self._head = head


_COUNTING_ON_PACKET_SENT = (
    CubicCongestionControl.on_packet_sent,
    RenoCongestionControl.on_packet_sent,
)
"""Congestion controllers' on_packet_sent that only add the packet's bytes in flight (and, for
CUBIC, restart after idle by the send time): a burst sent at one time may be told once."""

_STREAM_DELIVERY = ChunkedStreamSender.on_data_delivery
"""The delivery handler whose consecutive ranges BatchedAckRecovery merges."""


PACING_BURST_TIME = 0.002
"""Seconds of sending at the pacing rate that one burst may carry: two ticks of the event
loop's timer (1 ms in uvloop and asyncio on Linux), so pacing cannot fall behind it."""


class GranularPacer(QuicPacketPacer):
    """aioquic's pacer, with bursts long enough for a millisecond timer.

    aioquic allows a burst of at most 16 datagrams; the sender then waits for a timer,
    and the event loop's timers fire no sooner than a millisecond. At 1452-byte datagrams
    that caps a connection near 16 x 1452 bytes per millisecond (23 MB/s) whatever the
    congestion window says. Here a burst may last :data:`PACING_BURST_TIME` at the pacing
    rate (the congestion window still bounds what is in flight).
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        self.bucket_max = max(self.bucket_max, PACING_BURST_TIME)

    def charge(self, now: float, fraction: float) -> None:
        """A packet of ``fraction`` of the full datagram size went out at ``now``: it uses
        that fraction of a full packet's pacing time (aioquic charges every packet a full
        one, so a short packet delays the next full one as much as a full packet)."""
        if self.packet_time is not None:
            self.update_bucket(now=now)
            self.bucket_time = max(0.0, self.bucket_time - self.packet_time * fraction)


def cubic_packets_acked(
    cc: CubicCongestionControl, packets: list[QuicSentPacket], now: float
) -> None:
    """aioquic's CUBIC ``on_packet_acked`` for each in-flight packet of ``packets``, in
    order, with the same arithmetic and results, in one call. Within one ACK ``now``, the
    epoch, K, W_max and the RTT are fixed, so the two cubic targets are computed once, after
    the packet that (re)starts congestion avoidance if there is one (aioquic's own method
    handles that packet); per packet only the window arithmetic remains (a per-packet
    method call with four attribute-heavy helpers was ~10 % of the gateway's CPU at
    1452-byte datagrams)."""
    mds = cc._max_datagram_size
    increase = cc.additive_increase_factor
    ssthresh = cc.ssthresh
    cwnd = cc.congestion_window
    in_flight = cc.bytes_in_flight
    w_est = cc._W_est
    last_ack: float | None = cc.last_ack  # aioquic stores sent_time (typed optional) there
    targets: tuple[int, int] | None = None  # W_cubic(t + rtt), W_cubic(t)
    for packet in packets:
        if not packet.in_flight:
            continue
        sent = packet.sent_bytes
        if ssthresh is None or cwnd < ssthresh:  # slow start
            in_flight -= sent
            last_ack = packet.sent_time
            cwnd += sent
            continue
        if cc._starting_congestion_avoidance or cc._first_slow_start:
            # The packet that (re)starts congestion avoidance sets the epoch: aioquic's code.
            cc.congestion_window, cc.bytes_in_flight, cc._W_est = cwnd, in_flight, w_est
            cc.last_ack = last_ack  # type: ignore[assignment]
            cc.on_packet_acked(now=now, packet=packet)
            cwnd, in_flight, w_est = cc.congestion_window, cc.bytes_in_flight, cc._W_est
            last_ack = cc.last_ack
            continue  # no target was computed yet: this is the batch's first such packet
        in_flight -= sent
        last_ack = packet.sent_time
        if targets is None:
            t = now - cc._t_epoch
            targets = (cc.W_cubic(t + cc.rtt), cc.W_cubic(t))
        w_cubic_ahead, w_cubic_now = targets
        w_est = int(w_est + increase * (sent / cwnd))
        if w_cubic_ahead < cwnd:
            target = cwnd
        elif w_cubic_ahead > 1.5 * cwnd:
            target = int(cwnd * 1.5)
        else:
            target = w_cubic_ahead
        # Reno-friendly region, else concave and convex regions (the same step).
        cwnd = w_est if w_cubic_now < w_est else int(cwnd + (target - cwnd) * (mds / cwnd))
    cc.congestion_window = cwnd
    cc.bytes_in_flight = in_flight
    cc._W_est = w_est
    cc.last_ack = last_ack  # type: ignore[assignment]


class BatchedAckRecovery(QuicPacketRecovery):
    """aioquic's loss recovery, with the packets an ACK frame newly acknowledges handled in
    one pass: each in-flight packet still goes through the congestion controller in packet
    number order, but the delivery handlers of a stream's consecutive packets are called
    once for the contiguous range they cover (one call per run of packets instead of one
    per packet). The largest newly acknowledged packet (and, if it is not ack-eliciting,
    the largest that is) is left to aioquic's own on_ack_received, which then takes the
    RTT sample, detects losses and resets the probe count exactly as it would have."""

    def on_ack_received(
        self, *, ack_rangeset: RangeSet, ack_delay: float, now: float, space: QuicPacketSpace
    ) -> None:
        sent = space.sent_packets
        if len(sent) > 2:
            numbers = list(sent)
            newly: list[int] = []
            for r in ack_rangeset:
                lo = bisect.bisect_left(numbers, r.start)
                newly.extend(numbers[lo : bisect.bisect_left(numbers, r.stop, lo)])
            if len(newly) > 2:
                last = newly.pop()
                if not sent[last].is_ack_eliciting:
                    for index in range(len(newly) - 1, -1, -1):
                        if sent[newly[index]].is_ack_eliciting:
                            del newly[index]
                            break
                self._acknowledge([sent.pop(number) for number in newly], space, now)
        super().on_ack_received(
            ack_rangeset=ack_rangeset, ack_delay=ack_delay, now=now, space=space
        )

    def _acknowledge(
        self, packets: list[QuicSentPacket], space: QuicPacketSpace, now: float
    ) -> None:
        """What aioquic does for each newly acknowledged packet but the RTT sample: counts,
        congestion control, delivery handlers (a stream's contiguous runs merged)."""
        acked = QuicDeliveryState.ACKED
        cc = self._cc
        if type(cc) is CubicCongestionControl:
            cubic_packets_acked(cc, packets, now)
        else:
            for packet in packets:
                if packet.in_flight:
                    cc.on_packet_acked(packet=packet, now=now)
        # Congestion control first, then the handlers: neither reads what the other writes.
        run: Callable[..., None] | None = None  # the stream delivery run being merged
        run_start = run_stop = 0
        run_fin = False
        eliciting = 0
        for packet in packets:
            if packet.is_ack_eliciting:
                eliciting += 1
            for handler, args in packet.delivery_handlers:
                if getattr(handler, "__func__", None) is not _STREAM_DELIVERY:
                    handler(acked, *args)
                    continue
                start, stop, fin = args
                if handler == run and start == run_stop and not run_fin:
                    run_stop, run_fin = stop, fin
                    continue
                if run is not None:
                    run(acked, run_start, run_stop, run_fin)
                run, run_start, run_stop, run_fin = handler, start, stop, fin
        if run is not None:
            run(acked, run_start, run_stop, run_fin)
        space.ack_eliciting_in_flight -= eliciting


AUTOTUNE_START = 256 * 1024
"""Bytes: the receive window a paced stream starts with (when the cap is larger)."""


AUTOTUNE_MIN_RTT = PACING_BURST_TIME
"""Seconds: the least round trip window tuning assumes. Below two ticks of the event loop's
timer (loopback, where a round trip is tens of microseconds) the time to react to a window
update is set by scheduling, not by the path, and windows sized to the path alone would
keep a fast reader waiting on MAX_STREAM_DATA."""


def tuned_window(window: int, cap: int, since_last_raise: float, smoothed_rtt: float) -> int:
    """A stream's next receive window (bytes): doubled, up to ``cap``, when the application
    used a whole window in less than two round trips (``since_last_raise`` and
    ``smoothed_rtt`` in seconds), so the window follows the bandwidth-delay product
    instead of starting at the cap; unchanged otherwise (a slow consumer keeps it small)."""
    if smoothed_rtt > 0 and since_last_raise < 2 * smoothed_rtt and window < cap:
        return min(cap, window * 2)
    return window


SPARE_ROOM = 256
"""Bytes: room left in a packet (of the datagram and of the congestion window) after one
pass of aioquic's _write_application over everything it sends, above which the pass had
room for every frame it had to write (the largest control frame takes 54 bytes; a STREAM
frame fills what room there is), so a second pass would find nothing and is skipped."""

small_send_check: list[bool] | None = None
"""Tests: when a list, every transmit done by a native burst alone is followed by a pass of
aioquic's datagrams_to_send, and whether that wrote nothing (it must not) is appended."""

skipped_pass_check: list[bool] | None = None
"""Tests: when a list, a pass of _write_application that would be skipped is run instead,
and whether it wrote nothing (it must not) is appended."""

NATIVE_BURST_MIN = 4
"""Datagrams of new stream data below which a transmit with control frames due skips the
native burst (ACKs and control frames, then a burst, then aioquic again: three builder
passes instead of one). With nothing but stream data and an ACK due, a burst alone sends
it, whatever its size (:meth:`AppPacedQuicConnection._native_send_alone`)."""

ACK_PREFIX_CAPACITY = 256
"""Bytes: the most an ACK frame leading a native burst may take (older ranges that do not
fit are left out, as aioquic does when a packet is short of room)."""


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
        self.native_packets_sent = 0
        """Packets of stream data built and sealed by quicstore._native (native bursts)."""
        self.native_packets_received = 0
        """Packets opened and parsed by quicstore._native (native batch receive)."""
        self.passes_skipped = 0
        """Rounds of aioquic's _write_application skipped as empty (see SPARE_ROOM)."""
        self.native_sends_alone = 0
        """Transmits done by a native burst alone, without aioquic's builder (nothing but
        stream data and an ACK due: see :meth:`_only_stream_data_due`)."""
        self.acks_deferred = 0
        """Receives whose ACK frames were handled after the next send (see
        :attr:`defer_acks`)."""
        self._deferred_acks: list[tuple[int, bytes]] = []
        self._deferred_ack_time = 0.0
        self._consumed: dict[int, int] = {}
        self._windows: dict[int, tuple[int, float]] = {}  # stream -> (window, last raise)
        self._learned_window = 0
        """Bytes: the largest window a paced stream has grown to; new streams start there."""
        self._clock = 0.0
        self._connection_consumed = 0
        self._pacing_connection = False
        self._forgotten: set[int] = set()
        on_lost = self._loss._on_packets_lost

        self.pmtu: PmtuSearch | None = None
        """The datagram size search, if :meth:`start_pmtu_search` was called."""
        self.peer_max_udp_payload_size: int | None = None
        """The peer's max_udp_payload_size transport parameter, once known."""
        self._ack_with_data = False
        self._probes: dict[int, int] = {}  # packet number -> probe size
        self._probe_sizes = True
        self._probe_clock = 0.0

        def count_lost(*, packets: list[QuicSentPacket], **kwargs: object) -> None:
            packets = list(packets)
            if self._probes:
                # A lost size probe says the path is too narrow, not that it is congested.
                probes = [p for p in packets if self._probes.pop(p.packet_number, None)]
                if probes:
                    packets = [p for p in packets if p not in probes]
                    on_lost(
                        packets=probes,
                        congestion_event=False,
                        now=kwargs["now"],  # type: ignore[arg-type]
                        space=kwargs["space"],  # type: ignore[arg-type]
                    )
            if kwargs.get("congestion_event", True):
                self.packets_lost += len(packets)
            on_lost(packets=packets, **kwargs)  # type: ignore[arg-type]

        self._loss._on_packets_lost = count_lost  # type: ignore[method-assign, assignment]
        self._loss._pacer = GranularPacer(max_datagram_size=self._max_datagram_size)
        if type(self._loss) is QuicPacketRecovery:
            self._loss.__class__ = BatchedAckRecovery

    # -- datagram size search (DPLPMTUD, RFC 8899)

    def start_pmtu_search(self, ceiling: int, *, probe: bool = True) -> None:
        """Send at most the base size (1200 bytes) until the handshake is confirmed, then
        probe for larger datagrams up to ``ceiling`` bytes (see :mod:`.pmtud`), or, with
        ``probe`` false, go straight to ``ceiling``. Either way never above the peer's
        max_udp_payload_size."""
        self._set_datagram_size(min(self._max_datagram_size, BASE_SIZE))
        self.pmtu = PmtuSearch(ceiling=ceiling)
        self._probe_sizes = probe

    def probe_datagrams(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """A size probe to send now, if the search wants one: a 1-RTT packet of PING and
        PADDING exactly the size being tried."""
        search = self.pmtu
        if (
            search is None
            or not search.searching
            or not self._handshake_confirmed
            or self._state != QuicConnectionState.CONNECTED
        ):
            return []
        if self.peer_max_udp_payload_size is not None:
            search.ceiling = max(BASE_SIZE, min(search.ceiling, self.peer_max_udp_payload_size))
        self._probe_clock = now
        if not self._probe_sizes:  # trust the route (and the peer's limit) without probing
            self._set_datagram_size(search.on_probe_acknowledged(search.ceiling, now))
            search.done_at = now
            return []
        size = search.next_probe(now)
        if size is None:
            return []
        network_path = self._network_paths[0]
        builder = QuicPacketBuilder(
            host_cid=self.host_cid,
            is_client=self._is_client,
            max_datagram_size=size,
            packet_number=self._packet_number,
            peer_cid=self._peer_cid.cid,
            quic_logger=self._quic_logger,
            spin_bit=self._spin_bit,
            version=self._version or self._configuration.supported_versions[0],
        )
        builder.start_packet(QuicPacketType.ONE_RTT, self._cryptos[tls.Epoch.ONE_RTT])
        buf = builder.start_frame(
            QuicFrameType.PING, capacity=1, handler=self._on_probe_delivery, handler_args=(size,)
        )
        buf.push_bytes(bytes(builder.remaining_buffer_space))  # PADDING frames
        self._probes[self._packet_number] = size
        return self._flush_builder(
            builder=builder, network_path=network_path, peer_cid=self._peer_cid.cid, now=now
        )

    def _on_probe_delivery(self, delivery: QuicDeliveryState, size: int) -> None:
        search = self.pmtu
        if search is None:
            return
        for number in [n for n, s in self._probes.items() if s == size]:
            del self._probes[number]
        if delivery == QuicDeliveryState.ACKED:
            self._set_datagram_size(search.on_probe_acknowledged(size, self._probe_clock))
        else:
            search.on_probe_lost(size, self._probe_clock)

    def _set_datagram_size(self, size: int) -> None:
        """Send datagrams of up to ``size`` bytes from now on (packets, congestion control
        and pacing all count in it)."""
        self._max_datagram_size = size
        self._loss._cc._max_datagram_size = size  # type: ignore[attr-defined]
        self._loss._pacer._max_datagram_size = size

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if not from_session_ticket:
            params = pull_quic_transport_parameters(Buffer(data=data))
            self.peer_max_udp_payload_size = params.max_udp_payload_size

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.request_client_certificate:
            self.tls._request_client_certificate = True

    def pace_stream(self, stream_id: int) -> None:
        """Put a stream's receive window (and the connection's) under application control."""
        self._consumed.setdefault(stream_id, 0)
        stream = self._streams.get(stream_id)
        initial = (
            stream.max_stream_data_local
            if stream is not None
            else self._configuration.max_stream_data
        )
        # A new stream starts from the window earlier streams grew to (a fanned-out read's
        # next part need not ramp up from the initial window again).
        start = max(min(self.stream_window, initial), min(self.stream_window, self._learned_window))
        self._windows.setdefault(stream_id, (start, self._clock))
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
        self._windows.pop(stream_id, None)
        if consumed is None:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._connection_consumed += max(0, stream.receiver.highest_offset - consumed)
        self._forgotten.add(stream_id)

    def send_stream_view(
        self,
        stream_id: int,
        data: memoryview,
        release: Callable[[], None],
        end_stream: bool = False,
    ) -> None:
        """Like ``send_stream_data`` but without copying ``data``: the caller keeps it
        unchanged until ``release`` is called (see :meth:`ChunkedStreamSender.write_view`)."""
        self._ack_with_data = True
        sender = self._get_or_create_stream_for_send(stream_id).sender
        if isinstance(sender, ChunkedStreamSender):
            sender.write_view(data, release, end_stream)
        else:
            sender.write(bytes(data), end_stream)
            release()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        self._clock = now
        if self._ack_with_data:
            # aioquic writes an ACK only once it is due (1 ms after the packet it
            # acknowledges), so a response sent sooner goes without it and a separate
            # ACK-only datagram follows; when stream data is going out anyway, the ACK
            # rides along (request/response then costs one datagram each way).
            self._ack_with_data = False
            space = self._spaces.get(tls.Epoch.ONE_RTT)
            if space is not None and space.ack_at is not None and space.ack_at > now:
                space.ack_at = now
        if not self._native_burst_ready():
            return super().datagrams_to_send(now)
        alone = self._native_send_alone(now)
        if alone is not None:
            return alone
        if not self._burst_worthwhile():
            return super().datagrams_to_send(now)
        # Control frames first, through aioquic (the stream queue and a due ACK hidden from
        # it), then stream data in native bursts, the ACK in the first packet, then whatever
        # those left (other streams, a FIN alone, resets, an ACK no burst took) through
        # aioquic again. An ACK-only packet of its own would cost a full packet's pacing
        # time ahead of the data.
        space = self._spaces[tls.Epoch.ONE_RTT]
        ack_at = space.ack_at
        ack_due = ack_at is not None and ack_at <= now
        queue = self._streams_queue
        self._streams_queue = []
        if ack_due:
            space.ack_at = None
        try:
            datagrams = super().datagrams_to_send(now)
        finally:
            self._streams_queue = queue
        burst = self._native_bursts(now, ack_due)
        if ack_due and not burst:
            space.ack_at = ack_at
        if not burst:
            return datagrams + super().datagrams_to_send(now)
        # The burst stopped where the window or the pacer did: stream data it could carry
        # waits for the next burst rather than going out through aioquic's builder now
        # (at ~20 times the cost per packet; 8 % of a shard epoch's bytes went that way).
        queue = self._streams_queue
        waiting = [stream for stream in queue if self._burst_could_send(stream)]
        if not waiting:
            return datagrams + burst + super().datagrams_to_send(now)
        self._streams_queue = [stream for stream in queue if stream not in waiting]
        try:
            rest = super().datagrams_to_send(now)
        finally:
            # aioquic rebuilt the queue it saw (finished streams dropped, served ones last)
            self._streams_queue = waiting + self._streams_queue
        return datagrams + burst + rest

    def _native_send_alone(self, now: float) -> list[tuple[bytes, NetworkAddress]] | None:
        """Stream data (and the ACK due with it) sent by a native burst alone, when nothing
        else is due: aioquic's builder costs about 100 us a transmit here (a round over
        every control frame and stream, then its packet assembly), a native burst about 15,
        and a bulk transfer ran it twice around each burst. Data the congestion window or
        the pacer holds back waits for the next burst, as aioquic's next round would (its
        pacing timer is set the same way). None: aioquic's builder must run (the caller
        runs it)."""
        self._discard_finished_streams()
        if not self._only_stream_data_due():
            return None
        space = self._spaces[tls.Epoch.ONE_RTT]
        ack_at = space.ack_at
        ack_due = ack_at is not None and ack_at <= now
        if ack_due:
            space.ack_at = None
        burst = self._native_bursts(now, ack_due)
        if not burst:
            space.ack_at = ack_at
            return None
        self.native_sends_alone += 1
        self._pacing_at = None
        if stream_data_waiting(self):
            # What aioquic's next round would do first: hold the rest back until the pacer
            # allows another packet (the connection's timer then wakes the next transmit);
            # a full congestion window waits for ACKs instead.
            if space.ack_at is None or space.ack_at >= now:
                self._pacing_at = self._loss._pacer.next_send_time(now=now)
        elif small_send_check is not None:
            small_send_check.append(not super().datagrams_to_send(now))
        return burst

    def _discard_finished_streams(self) -> None:
        """What aioquic's _write_application does first for each queued stream that is
        finished (all sent and acknowledged, all received): forget it, and let the peer open
        another in its place."""
        queue = self._streams_queue
        if not any(stream.is_finished for stream in queue):
            return
        kept = []
        for stream in queue:
            stream_id = stream.stream_id
            if not stream.is_finished or stream_id is None:
                kept.append(stream)
                continue
            self._streams.pop(stream_id)
            if stream_is_client_initiated(stream_id) != self._is_client:
                self._stream_limit(stream_id).value += 1
        self._streams_queue = kept

    def _only_stream_data_due(self) -> bool:
        """True if a pass of aioquic's datagrams_to_send now would write nothing but an ACK
        and STREAM frames of the streams native bursts serve: no close, probe, PING,
        HANDSHAKE_DONE, path validation, connection ID, STREAMS_BLOCKED, MAX_DATA,
        MAX_STREAMS, MAX_STREAM_DATA, CRYPTO, DATAGRAM, RESET_STREAM or STOP_SENDING frame
        due, no second path to probe, and every stream with something pending is one a
        burst sends (data, not a FIN alone). Mirrors aioquic 1.7.2's _write_application and
        quicstore's own limit writers (checked in tests: see small_send_check)."""
        if (
            self._probe_pending
            or self._ping_pending
            or self._handshake_done_pending
            or self._retire_connection_ids
            or self._streams_blocked_pending
            or self._datagrams_pending
            or len(self._network_paths) != 1
            or self._network_paths[0].remote_challenges
            or (self._is_client and self._remote_preferred_address is not None)
            or self._crypto_data_waiting()
            or any(not cid.was_sent for cid in self._host_cids)
            or self._connection_limits_due()
        ):
            return False
        for stream in self._streams.values():
            if self._stream_limit_due(stream):
                return False
        for stream in self._streams_queue:
            sender = stream.sender
            if sender.reset_pending or stream.receiver.stop_pending:
                return False
            if (len(sender._pending) or sender._pending_eof) and not (
                self._burst_serves(stream) and len(sender._pending)
            ):
                return False
        return True

    def _connection_limits_due(self) -> bool:
        """True if _write_connection_limits would write MAX_DATA or MAX_STREAMS now."""
        max_data = self._local_max_data
        if self._pacing_connection:
            target = self._connection_consumed + self.connection_window
            if target - max_data.value >= self.connection_window // 4:
                return True
        elif max_data.used * 2 > max_data.value:
            return True
        return max_data.value != max_data.sent or self._stream_limits_due()

    def _stream_limit_due(self, stream: QuicStream) -> bool:
        """True if _write_stream_limits would write MAX_STREAM_DATA for ``stream`` now."""
        stream_id = stream.stream_id
        local = stream.max_stream_data_local
        consumed = self._consumed.get(stream_id) if stream_id is not None else None
        if consumed is None or stream_id is None:
            if local and stream.receiver.highest_offset * 2 > local:
                return True
        else:
            window = self._windows.get(stream_id, (self.stream_window, 0.0))[0]
            if local and consumed + window - local >= window // 4:
                return True
        return bool(stream.max_stream_data_local_sent != local)

    @staticmethod
    def _burst_serves(stream: QuicStream) -> bool:
        """True if native bursts carry this stream's data: a chunked sender, not blocked,
        with nothing to reset or stop (what is left goes through aioquic's builder)."""
        return (
            type(stream.sender) is ChunkedStreamSender
            and not stream.is_blocked
            and not stream.sender.reset_pending
            and not stream.receiver.stop_pending
            and stream.stream_id is not None
        )

    def _credit_end(self, stream: QuicStream) -> int:
        """The stream offset flow control (the stream's and the connection's) lets data
        reach now."""
        return min(
            stream.sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
            stream.max_stream_data_remote,
        )

    def _burst_could_send(self, stream: QuicStream) -> bool:
        """True if a native burst could send some of the stream's pending data now: data
        (not only a FIN) pending within the flow-control credit."""
        pending = stream.sender._pending
        return (
            self._burst_serves(stream)
            and bool(len(pending))
            and pending[0].start < self._credit_end(stream)
        )

    # -- native batch receive (quicstore._native opens the packets and parses the frames)

    native_receive = True
    """Open batches of 1-RTT datagrams natively when the native packet path is in use (False:
    every datagram through aioquic's receive_datagram)."""

    defer_acks = True
    """Handle the ACK frames of a natively received batch after the next send, when the
    batch completes messages (every stream in it ends) and no stream data is waiting: a
    request (or a response) then costs the round trip no ACK processing before its answer
    (or the next request) leaves, about 60 us a side here. The frames are handled as at
    their receipt (same time, same order relative to later receives and timers) by
    :meth:`settle_acks`, which the driver calls after each send, and which every other
    entry point that reads loss recovery (receives, timers) calls first. Meanwhile the
    sender counts the acknowledged bytes as in flight, and the first ACK it sends may
    repeat ranges the deferred ones had confirmed (the ACK of an ACK), both as if the
    ACK had arrived a moment later."""

    def settle_acks(self) -> bool:
        """Handle the ACK frames a receive deferred (see :attr:`defer_acks`) as at their
        receipt; True if there were any (the caller then handles the events, re-arms the
        timer and wakes what waited for acknowledgements)."""
        acks = self._deferred_acks
        if not acks:
            return False
        self._deferred_acks = []
        if self._state in END_STATES or self._close_pending:
            return True
        try:
            self._handle_acks(acks, self._deferred_ack_time)
        except QuicConnectionError as exc:
            self._close_for(exc)
        return True

    def _handle_acks(self, acks: list[tuple[int, bytes]], now: float) -> None:
        """aioquic's handling of 1-RTT ACK frames (type, bytes after the type) received at
        ``now``; raises QuicConnectionError as it does."""
        context = QuicReceiveContext(
            epoch=tls.Epoch.ONE_RTT,
            host_cid=self.host_cid,
            network_path=self._network_paths[0],
            quic_logger_frames=None,
            time=now,
            version=self._version,
        )
        for frame_type, body in acks:
            self._handle_ack_frame(context, frame_type, Buffer(data=body))

    def _close_for(self, exc: QuicConnectionError) -> None:
        """Close the connection for a protocol error found in received frames."""
        self.close(
            error_code=exc.error_code,
            frame_type=exc.frame_type,
            reason_phrase=exc.reason_phrase,
        )

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        self.settle_acks()
        super().receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        self.settle_acks()
        super().handle_timer(now)

    def receive_datagram_batch(
        self, datagrams: list[bytes], addr: NetworkAddress, now: float
    ) -> None:
        """Receive several datagrams from ``addr`` at ``now``: the same outcome as
        ``receive_datagram`` for each in turn. A batch of 1-RTT packets in the current key
        phase carrying only PADDING, PING, ACK and STREAM frames is opened and parsed in
        one native call, each stream's contiguous data delivered as one frame; any other
        batch goes through aioquic datagram by datagram."""
        self.settle_acks()
        if not self._receive_natively(datagrams, addr, now):
            for data in datagrams:
                self.receive_datagram(data, addr, now=now)

    def _settled_for_native(self) -> bool:
        """True while the connection is in the steady state the native paths handle: connected,
        handshake confirmed, not closing, no qlog, on a validated path."""
        return (
            self._state == QuicConnectionState.CONNECTED
            and self._handshake_confirmed
            and not self._close_pending
            and self._quic_logger is None
            and bool(self._network_paths)
            and self._network_paths[0].is_validated
        )

    def _receive_natively(self, datagrams: list[bytes], addr: NetworkAddress, now: float) -> bool:
        if (
            not self.native_receive
            or not self._settled_for_native()
            or self._network_paths[0].addr != addr
        ):
            return False
        crypto = self._cryptos.get(tls.Epoch.ONE_RTT)
        if (
            crypto is None
            or type(crypto.recv) is not NativeCryptoContext
            or not crypto.recv.is_valid()
        ):
            return False
        if not self._is_client and self._cryptos[tls.Epoch.ZERO_RTT].recv.is_valid():
            return False  # aioquic drops the 0-RTT keys on the first 1-RTT packet
        space = self._spaces[tls.Epoch.ONE_RTT]
        recv = crypto.recv
        opened = _native.open_stream_packets(
            recv.aead, recv.hp, datagrams, self.host_cid, space.expected_packet_number,
            recv.key_phase,
        )  # fmt: skip
        if opened is None:
            return False
        numbers, highest_first, ack_eliciting, streams, acks = opened
        received = space.received_packets
        if len(set(numbers)) != len(numbers) or any(n in received for n in numbers):
            return False  # a duplicate: aioquic's path drops it
        self.native_packets_received += len(numbers)
        largest = max(numbers)
        if largest > space.expected_packet_number:
            space.expected_packet_number = largest + 1
        if largest > self._spin_highest_pn:
            spin = bool(highest_first & 0x20)
            self._spin_bit = not spin if self._is_client else spin
            self._spin_highest_pn = largest
        try:
            if (
                acks
                and streams
                and self.defer_acks
                and all(segment[3] for segment in streams)
                and not stream_data_waiting(self)
            ):
                self._deferred_acks = acks
                self._deferred_ack_time = now
                self.acks_deferred += 1
            else:
                self._handle_acks(acks, now)
            for stream_id, offset, data, fin in streams:
                self._receive_stream_data(stream_id, offset, data, fin)
        except QuicConnectionError as exc:
            self._close_for(exc)
        if self._state in END_STATES or self._close_pending:
            return True
        self._close_at = now + self._idle_timeout()
        self._ack_eliciting_sent_since_receipt = False
        if largest > space.largest_received_packet:
            space.largest_received_packet = largest
            space.largest_received_time = now
        ack_queue = space.ack_queue
        lowest = min(numbers)
        if largest - lowest == len(numbers) - 1:
            # One run (the usual batch; no duplicates, checked above): one range, and the
            # duplicate window takes the numbers at once and slides to the largest.
            ack_queue.add(lowest, largest + 1)
            received._received.update(numbers)
            received.add(largest)
        else:
            for number in numbers:
                ack_queue.add(number)
                received.add(number)
        while len(ack_queue) > MAX_ACK_RANGES:
            ack_queue.shift()
        if ack_eliciting and (space.ack_at is None or len(numbers) > 1):
            # RFC 9000 13.2.2: acknowledge at least every second ack-eliciting packet; a
            # batch of them is acknowledged at once (in this event-loop pass).
            space.ack_at = now if len(numbers) > 1 else now + self._ack_delay
        return True

    def _receive_stream_data(self, stream_id: int, offset: int, data: bytes, fin: bool) -> None:
        """One STREAM frame's worth of data (several frames joined): aioquic's checks and
        delivery (_handle_stream_frame) without re-parsing it."""
        frame_type = QuicFrameType.STREAM_BASE | 2 | (4 if offset else 0) | (1 if fin else 0)
        self._assert_stream_can_receive(frame_type, stream_id)
        try:
            stream = self._get_or_create_stream(frame_type, stream_id)
        except StreamFinishedError:
            return  # aioquic ignores frames of streams it has forgotten
        end = offset + len(data)
        if end > stream.max_stream_data_local:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FLOW_CONTROL_ERROR,
                frame_type=frame_type,
                reason_phrase="Over stream data limit",
            )
        newly_received = max(0, end - stream.receiver.highest_offset)
        if self._local_max_data.used + newly_received > self._local_max_data.value:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FLOW_CONTROL_ERROR,
                frame_type=frame_type,
                reason_phrase="Over connection data limit",
            )
        try:
            event = stream.receiver.handle_frame(QuicStreamFrame(data=data, fin=fin, offset=offset))
        except FinalSizeError as exc:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FINAL_SIZE_ERROR,
                frame_type=frame_type,
                reason_phrase=str(exc),
            ) from exc
        if event is not None:
            self._events.append(event)
        self._local_max_data.used += newly_received

    # -- native stream bursts (quicstore._native builds and seals the packets)

    native_bursts = True
    """Send stream data in native bursts when the native packet path is in use (False: every
    packet through aioquic's builder)."""

    def _native_burst_ready(self) -> bool:
        """True if stream data may go out in native bursts now: 1-RTT keys on the native
        path, no key update waiting, handshake confirmed, a validated path, no qlog."""
        if not self.native_bursts or not self._settled_for_native():
            return False
        crypto = self._cryptos.get(tls.Epoch.ONE_RTT)
        return (
            crypto is not None
            and type(crypto.send) is NativeCryptoContext
            and crypto.send.is_valid()
            and not crypto._update_key_requested
        )

    def _burst_worthwhile(self) -> bool:
        """True if the queued streams hold at least NATIVE_BURST_MIN datagrams of new
        data: below that, one pass of aioquic's builder costs less than three."""
        wanted = NATIVE_BURST_MIN * self._max_datagram_size
        pending = 0
        for stream in self._streams_queue:
            sender = stream.sender
            if not sender.buffer_is_empty:
                pending += sender._buffer_stop - sender.highest_offset
                if pending >= wanted:
                    return True
        return False

    def _native_bursts(self, now: float, with_ack: bool) -> list[tuple[bytes, NetworkAddress]]:
        """Stream data of the queued streams, in order, as native-built 1-RTT packets, as
        much as the congestion window and the pacer allow now; with ``with_ack``, the first
        packet leads with an ACK frame (as aioquic's builder writes it). Each packet is
        registered with loss recovery as aioquic's builder would register it (its frames'
        delivery handlers), and flow control is charged the same way. A stream's data is
        cut into full packets across the buffers it was written in; a packet is short only
        where the stream's pending data (or its flow-control credit) ends."""
        loss = self._loss
        cc = loss._cc
        size = self._max_datagram_size
        # Bytes the window and the pacer allow; a packet is started only with room for a
        # full one, but a short one (a small response) is charged only its own size.
        room = int(cc.congestion_window - cc.bytes_in_flight)
        pacer = loss._pacer
        if pacer.packet_time is not None:
            pacer.update_bucket(now=now)
            if pacer.bucket_time <= 0:
                return []
            room = min(room, math.ceil(pacer.bucket_time / pacer.packet_time) * size)
        if room < size:
            return []
        crypto = self._cryptos[tls.Epoch.ONE_RTT]
        send = crypto.send
        header = bytes([0x41 | self._spin_bit << 5 | crypto.key_phase << 2]) + self._peer_cid.cid
        space = self._spaces[tls.Epoch.ONE_RTT]
        path = self._network_paths[0]
        addr = path.addr
        out: list[tuple[bytes, NetworkAddress]] = []
        served: list[QuicStream] = []
        one_rtt, one_rtt_packet = tls.Epoch.ONE_RTT, QuicPacketType.ONE_RTT
        for stream in self._streams_queue:
            if stream.sender.buffer_is_empty or not self._burst_serves(stream):
                continue
            sender = cast(ChunkedStreamSender, stream.sender)  # _burst_serves checked it
            used_before = sender.highest_offset
            sent_before = len(out)
            while room >= size:
                max_offset = self._credit_end(stream)
                count = min(room // size, 64)
                # A buffer's last bytes short of a packet are joined with the next buffer's
                # head, so that packets are cut short only where pending data ends; and one
                # call seals through the following buffers (a read and the next DATA frame's
                # header, say), up to the packets the window allows.
                pending = sender.next_pending_view(max_offset, size, size * count)
                if pending is None:
                    break
                start, data, following, fin, more = pending
                handlers: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
                prefix = b""
                if with_ack and not out:
                    prefix = self._ack_prefix(space, now)
                    handlers.append((self._on_ack_delivery, (space, space.largest_received_packet)))
                packets, ends = _native.seal_stream_packets(
                    send.aead, send.hp, header, self._packet_number, stream.stream_id,
                    start, data, fin, size, count, prefix, more, following,
                )  # fmt: skip
                if not packets:
                    break
                with_ack = False
                handler = sender.on_data_delivery
                packet_start = start
                data_end = start + len(data) + sum(map(len, following or ()))
                number = self._packet_number
                records = []
                # Per packet, at ~100k packets per 128 MiB at 1452 bytes: positional
                # arguments (QuicSentPacket's field order) and no per-packet branches.
                for packet, end in zip(packets, ends, strict=True):
                    handlers.append((handler, (packet_start, end, False)))
                    record = QuicSentPacket(
                        one_rtt, True, True, False, number, one_rtt_packet, now, len(packet),
                        handlers, [],
                    )  # fmt: skip
                    records.append(record)
                    handlers = []
                    number += 1
                    room -= len(packet)
                    out.append((packet, addr))
                    packet_start = end
                if fin and packet_start == data_end:
                    last_handler, (last_start, last_end, _) = records[-1].delivery_handlers[-1]
                    records[-1].delivery_handlers[-1] = (last_handler, (last_start, last_end, True))
                self._register_sent(records, space, now)
                sender.mark_sent(start, packet_start, fin and packet_start == data_end)
                self._remote_max_data_used += max(0, sender.highest_offset - used_before)
                used_before = max(used_before, sender.highest_offset)
            if len(out) > sent_before:
                served.append(stream)
            if room < size:
                break
        if out:
            if not self._ack_eliciting_sent_since_receipt:
                self._close_at = now + self._idle_timeout()
                self._ack_eliciting_sent_since_receipt = True
            if served:  # served streams go to the back of the queue, as aioquic does
                self._streams_queue = [s for s in self._streams_queue if s not in served]
                self._streams_queue.extend(served)
        return out

    def _register_sent(
        self, records: list[QuicSentPacket], space: QuicPacketSpace, now: float
    ) -> None:
        """Tell loss recovery, congestion control and the pacer that the in-flight,
        ack-eliciting 1-RTT packets ``records`` (consecutive numbers from the next one) went
        out at ``now``: what aioquic's on_packet_sent and pacer do for each, done once for
        all where the congestion controller only counts bytes (CUBIC, Reno)."""
        loss = self._loss
        sent_packets = space.sent_packets
        total = 0
        for record in records:
            sent_packets[record.packet_number] = record
            total += record.sent_bytes
        space.ack_eliciting_in_flight += len(records)
        if loss.handshake_confirmed or not space.is_application_data:
            loss._time_of_last_sent_ack_eliciting_packet = now
        cc = loss._cc
        if type(cc).on_packet_sent in _COUNTING_ON_PACKET_SENT:
            cc.on_packet_sent(packet=records[0])  # its idle-restart check, once
            cc.bytes_in_flight += total - records[0].sent_bytes
        else:
            for record in records:
                cc.on_packet_sent(packet=record)
        pacer = loss._pacer
        if isinstance(pacer, GranularPacer):
            pacer.charge(now, total / self._max_datagram_size)
        else:
            for _record in records:
                pacer.update_after_send(now=now)
        self._network_paths[0].bytes_sent += total
        self._packet_number += len(records)
        self.native_packets_sent += len(records)

    def _ack_prefix(self, space: QuicPacketSpace, now: float) -> bytes:
        """The ACK frame aioquic's _write_ack_frame would write into the next packet (and
        its ACK-of-ACK PING), as bytes."""
        received = space.largest_received_time
        delay = int((now - (now if received is None else received)) * 1000000)
        delay >>= self._local_ack_delay_exponent
        buf = Buffer(capacity=ACK_PREFIX_CAPACITY + 1)
        buf.push_uint_var(QuicFrameType.ACK)
        ranges = push_ack_frame(buf, space.ack_queue, delay, ACK_PREFIX_CAPACITY - 1)
        if ranges > 1 and self._packet_number % 8 == 0:
            buf.push_uint_var(QuicFrameType.PING)
        return buf.data

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """aioquic's send_stream_data; pending ACKs ride along with the data."""
        self._ack_with_data = True
        super().send_stream_data(stream_id, data, end_stream)

    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        stream = super()._get_or_create_stream_for_send(stream_id)
        sender = stream.sender
        if (
            type(sender) is QuicStreamSender
            and not sender._buffer_stop
            and not (sender._buffer_fin is not None or sender._reset_error_code is not None)
        ):
            stream.sender = ChunkedStreamSender(stream_id, writable=not sender.is_finished)
        return stream

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        stream_id = stream.stream_id
        consumed = self._consumed.get(stream_id) if stream_id is not None else None
        if consumed is None or stream_id is None:
            super()._write_stream_limits(builder, space, stream)
            return
        window, raised_at = self._windows.get(stream_id, (self.stream_window, 0.0))
        target = consumed + window
        # Raise in steps of a quarter window so that MAX_STREAM_DATA frames stay rare.
        previous = stream.max_stream_data_local
        if previous and target - previous >= window // 4:
            # How long a whole window took to use, from this step's pace.
            whole_window = (self._clock - raised_at) * window / (target - previous)
            rtt = max(self._loss._rtt_smoothed, AUTOTUNE_MIN_RTT)
            grown = tuned_window(window, self.stream_window, whole_window, rtt)
            self._windows[stream_id] = (grown, self._clock)
            # The grown window applies now: re-judged later in the same transmit (aioquic
            # calls this again for each packet it starts), a window raised this instant
            # would look used up at once and doubled again, up to the cap.
            stream.max_stream_data_local = consumed + grown
            if grown > self._learned_window:
                self._learned_window = grown
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

    def _write_application(
        self, builder: QuicPacketBuilder, network_path: QuicNetworkPath, now: float
    ) -> None:
        """aioquic's pass over what goes in 1-RTT packets, without its last round when that
        would find nothing: aioquic loops, starting a packet each time, until a packet comes
        out empty, so a small request or response costs two full passes over every control
        frame and stream. A packet that a pass left with :data:`SPARE_ROOM` bytes to spare
        (in the datagram and in the congestion window) had room for everything the pass
        writes, so the next round would be empty: it is cut short by the builder's own stop
        (as when the congestion window runs out). Not when a stream or the 1-RTT crypto
        stream still has something pending (a round writes one frame per stream: a lost
        range and new data are two), when streams discarded in the pass let the next round
        announce MAX_STREAMS, or when DATAGRAM frames are queued (one that does not fit is
        left for the next packet)."""
        if self._datagrams_pending:
            super()._write_application(builder, network_path, now)
            return
        streams = len(self._streams)
        start_packet = builder.start_packet
        rounds = 0
        skippable = -1  # the round that would have been skipped (skipped_pass_check)

        def start_round(packet_type: QuicPacketType, crypto: CryptoPair) -> None:
            nonlocal rounds, skippable
            if (
                rounds
                and skippable < 0
                and not builder.packet_is_empty
                and builder.remaining_buffer_space >= SPARE_ROOM
                and builder.remaining_flight_space >= SPARE_ROOM
                and (len(self._streams) == streams or not self._stream_limits_due())
                and not stream_data_waiting(self)
                and not self._crypto_data_waiting()
            ):
                self.passes_skipped += 1
                if skipped_pass_check is None:
                    raise QuicPacketBuilderStop
                skippable = rounds
            rounds += 1
            start_packet(packet_type, crypto)

        builder.start_packet = start_round  # type: ignore[method-assign]
        try:
            super()._write_application(builder, network_path, now)
        finally:
            del builder.start_packet
        if skippable >= 0 and skipped_pass_check is not None:
            skipped_pass_check.append(rounds == skippable + 1 and builder.packet_is_empty)

    def _crypto_data_waiting(self) -> bool:
        """True if the 1-RTT crypto stream (session tickets) has data not yet sent."""
        crypto_stream = self._crypto_streams.get(tls.Epoch.ONE_RTT)
        return crypto_stream is not None and bool(len(crypto_stream.sender._pending))

    def _stream_limits_due(self) -> bool:
        """True if aioquic's _write_connection_limits would write MAX_STREAMS now (the peer
        may open more streams than announced, and aioquic's batching does not hold the
        update back)."""
        return any(
            limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent
            for limit in (self._local_max_streams_bidi, self._local_max_streams_uni)
        )

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
