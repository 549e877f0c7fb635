"""quicstore's adjustments to aioquic (transport/compat.py), checked against aioquic 1.7.2."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import aioquic
import pytest
from aioquic import tls
from aioquic._crypto import HeaderProtection as _StockHeaderProtection
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicSentPacket
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender
from hypothesis import example, given, settings
from hypothesis import strategies as st

import quicstore
from quicstore.client.client import Client
from quicstore.server.app import RunningGateway
from quicstore.transport import compat
from quicstore.transport.compat import ChunkedStreamSender
from tools.impair_proxy import ImpairmentConfig, start_proxy


def test_pinned_aioquic_version() -> None:
    assert aioquic.__version__ in compat.TESTED_AIOQUIC_VERSIONS


# One step of a sender's life: write, take a frame, or report a sent frame acked or lost.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(min_size=0, max_size=3000), st.booleans()),
        st.tuples(st.just("frame"), st.integers(-1, 2500), st.integers(0, 40_000)),
        st.tuples(st.just("deliver"), st.integers(0, 1 << 30), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_chunked_sender_sends_what_aioquic_sends(script: list[tuple[object, ...]]) -> None:
    """Same writes, frames, ACKs and losses: the same frames, offsets, FIN and finished
    state as aioquic's sender, and the bytes still buffered agree."""
    reference = QuicStreamSender(stream_id=0, writable=True)
    chunked = ChunkedStreamSender(stream_id=0, writable=True)
    in_flight: list[tuple[int, int, bool]] = []
    handed: list[int] = []  # end offsets of buffers handed over
    released: list[int] = []
    for step in script:
        if step[0] == "write":
            data, fin = step[1], step[2]
            assert isinstance(data, bytes) and isinstance(fin, bool)
            if reference._buffer_fin is not None:
                continue
            reference.write(data, end_stream=fin)
            if len(data) % 2:
                end = chunked._buffer_stop + len(data)
                chunked.write_view(
                    memoryview(bytearray(data)), lambda end=end: released.append(end), fin
                )
                handed.append(end)
            else:
                chunked.write(bytearray(data), end_stream=fin)
        elif step[0] == "frame":
            max_size, max_offset = step[1], step[2]
            assert isinstance(max_size, int) and isinstance(max_offset, int)
            expected = reference.get_frame(max_size, max_offset)
            got = chunked.get_frame(max_size, max_offset)
            if expected is None:
                assert got is None
                continue
            assert got is not None
            assert (got.offset, bytes(got.data), got.fin) == (
                expected.offset,
                expected.data,
                expected.fin,
            )
            in_flight.append((expected.offset, expected.offset + len(expected.data), expected.fin))
        elif in_flight:
            pick, acked = step[1], step[2]
            assert isinstance(pick, int)
            start, stop, fin = in_flight.pop(pick % len(in_flight))
            state = QuicDeliveryState.ACKED if acked else QuicDeliveryState.LOST
            reference.on_data_delivery(state, start, stop, fin)
            chunked.on_data_delivery(state, start, stop, fin)
        assert chunked.is_finished == reference.is_finished
        assert chunked.highest_offset == reference.highest_offset
        assert chunked.buffer_is_empty == reference.buffer_is_empty
        assert (chunked._buffer_stop - chunked._buffer_start) == len(reference._buffer)
        # A handed-over buffer is released exactly once, when all of it is acknowledged.
        assert released == [end for end in handed if end <= chunked._buffer_start]


def test_chunked_sender_drops_chunks_once_acknowledged() -> None:
    sender = ChunkedStreamSender(stream_id=0, writable=True)
    for _ in range(200):
        sender.write(bytearray(1000))
    frames = []
    while (frame := sender.get_frame(1500)) is not None:
        frames.append(frame)
    for frame in frames:
        sender.on_data_delivery(
            QuicDeliveryState.ACKED, frame.offset, frame.offset + len(frame.data), False
        )
    assert sum(len(chunk) for chunk in sender._chunks) == 0
    assert len(sender._chunks) < 200  # compacted, not merely emptied


@settings(max_examples=200, deadline=None)
@given(
    cipher=st.sampled_from([(b"aes-128-ecb", 16), (b"aes-256-ecb", 32), (b"chacha20", 32)]),
    key_seed=st.binary(min_size=32, max_size=32),
    long_header=st.booleans(),
    pn_length=st.integers(1, 4),
    prefix=st.binary(min_size=0, max_size=40),
    payload=st.binary(min_size=20, max_size=2000),
)
def test_fast_header_protection_matches_aioquic(
    cipher: tuple[bytes, int],
    key_seed: bytes,
    long_header: bool,
    pn_length: int,
    prefix: bytes,
    payload: bytes,
) -> None:
    name, key_length = cipher
    key = key_seed[:key_length]
    first = (0xC0 if long_header else 0x40) | (pn_length - 1)
    plain_header = bytes([first]) + prefix + bytes(range(1, pn_length + 1))
    fast = compat.FastHeaderProtection(name, key)
    stock = _StockHeaderProtection(name, key)
    packet = stock.apply(plain_header, payload)
    assert fast.apply(plain_header, payload) == packet
    pn_offset = len(plain_header) - pn_length
    assert fast.remove(packet, pn_offset) == stock.remove(packet, pn_offset)


def test_handed_over_buffers_are_sent_uncopied_and_released_once_acknowledged() -> None:
    sender = ChunkedStreamSender(stream_id=0, writable=True)
    buffers = [bytearray(os.urandom(5000)) for _ in range(3)]
    released: list[int] = []
    for i, buffer in enumerate(buffers):
        sender.write_view(memoryview(buffer), lambda i=i: released.append(i))
    frames = []
    while (frame := sender.get_frame(1200)) is not None:
        frames.append(frame)
    assert b"".join(f.data for f in frames) == b"".join(buffers)
    # Acknowledge out of order: a buffer is released only when all of it is acknowledged.
    for frame in reversed(frames):
        sender.on_data_delivery(
            QuicDeliveryState.ACKED, frame.offset, frame.offset + len(frame.data), False
        )
        done = frame.offset == 0
        assert released == ([0, 1, 2] if done else [])
    assert released == [0, 1, 2]


def test_reset_releases_handed_over_buffers() -> None:
    sender = ChunkedStreamSender(stream_id=0, writable=True)
    released: list[str] = []
    sender.write_view(memoryview(bytearray(3000)), lambda: released.append("a"))
    sender.get_frame(1000)
    sender.reset(7)
    assert released == ["a"]
    sender.reset(7)
    assert released == ["a"]


def test_pacer_bursts_cover_two_timer_ticks() -> None:
    """At 1452-byte datagrams and a 1 ms RTT with a 1 MB window (1 GB/s), aioquic's pacer
    lets 16 datagrams go per burst; ours lets 2 ms of sending go, so a millisecond timer
    can keep up with the rate."""
    size, window, rtt = 1452, 1_000_000, 0.001
    stock = QuicPacketPacer(max_datagram_size=size)
    ours = compat.GranularPacer(max_datagram_size=size)

    def burst(pacer: QuicPacketPacer) -> int:
        pacer.update_rate(congestion_window=window, smoothed_rtt=rtt)
        pacer.bucket_time = pacer.bucket_max
        now, sent = 10.0, 0
        pacer.evaluation_time = now
        while pacer.next_send_time(now) is None and sent < 10_000:
            pacer.update_after_send(now)
            sent += 1
        return sent

    assert burst(stock) <= 17
    rate_packets_per_ms = window / rtt / size / 1000
    assert burst(ours) >= 2 * rate_packets_per_ms - 1


def _recovery(batched: bool) -> tuple[QuicPacketRecovery, QuicPacketSpace]:
    recovery = QuicPacketRecovery(
        congestion_control_algorithm="cubic",
        initial_rtt=0.05,
        max_datagram_size=1452,
        peer_completed_address_validation=True,
        send_probe=lambda: None,
    )
    if batched:
        recovery.__class__ = compat.BatchedAckRecovery
    recovery.handshake_confirmed = True
    space = QuicPacketSpace(is_application_data=True)
    recovery.spaces = [space]
    return recovery, space


def _recovery_state(recovery: QuicPacketRecovery, space: QuicPacketSpace) -> tuple[object, ...]:
    cc = recovery._cc
    return (
        list(space.sent_packets), space.largest_acked_packet, space.ack_eliciting_in_flight,
        space.loss_time, cc.congestion_window, cc.bytes_in_flight, cc.ssthresh,
        recovery._rtt_latest, recovery._rtt_smoothed, recovery._rtt_min, recovery._pto_count,
        _cubic_state(cc),
    )  # fmt: skip


def _cubic_state(cc: object) -> dict[str, object]:
    """Every attribute of a congestion controller (bytes_in_flight starts as a class
    attribute) but its HyStart RTT monitor."""
    names = (set(vars(cc)) | {"bytes_in_flight"}) - {"_rtt_monitor"}
    return {name: getattr(cc, name) for name in sorted(names)}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=120),
    st.lists(
        st.tuples(st.lists(st.tuples(st.integers(0, 119), st.integers(1, 40)), max_size=4),
                  st.floats(0.0, 0.2)),
        min_size=1, max_size=12,
    ),
)  # fmt: skip
@example(packets=[(0, True)] * 10, acks=[([(0, 3), (4, 5)], 0.0)])  # a hole in one stream
def test_batched_ack_recovery_ends_where_aioquic_does(
    packets: list[tuple[int, bool]], acks: list[tuple[list[tuple[int, int]], float]]
) -> None:
    """BatchedAckRecovery against aioquic's QuicPacketRecovery, both fed the same sent
    packets (stream data of three streams, or ACK-only packets out of flight) and the same
    ACK frames: the same packets left in flight, congestion window, bytes in flight, RTT
    estimates, losses declared, and the same acknowledged and pending ranges in every
    stream, after every frame."""
    sides = []
    for batched in (False, True):
        recovery, space = _recovery(batched)
        senders = [ChunkedStreamSender(n * 4, True) for n in range(3)]
        for sender in senders:
            sender.write(bytes(1200 * len(packets)), end_stream=True)
        sides.append((recovery, space, senders))
    now = 1000.0
    for number, (stream, eliciting) in enumerate(packets):
        now += 0.001
        for recovery, space, senders in sides:
            handlers = []
            if eliciting:
                frame = senders[stream].get_frame(1200)
                assert frame is not None
                end = frame.offset + len(frame.data)
                handlers.append((senders[stream].on_data_delivery, (frame.offset, end, frame.fin)))
            recovery.on_packet_sent(
                packet=QuicSentPacket(
                    epoch=tls.Epoch.ONE_RTT, in_flight=eliciting, is_ack_eliciting=eliciting,
                    is_crypto_packet=False, packet_number=number,
                    packet_type=QuicPacketType.ONE_RTT, sent_time=now,
                    sent_bytes=1252 if eliciting else 40, delivery_handlers=handlers,
                ),
                space=space,
            )  # fmt: skip
    for ranges, delay in acks:
        now += delay + 0.001
        rangeset = RangeSet()
        for start, length in ranges:
            if start < len(packets):
                rangeset.add(start, min(start + length, len(packets)))
        if not len(rangeset):
            continue
        states = []
        for recovery, space, senders in sides:
            recovery.on_ack_received(ack_rangeset=rangeset, ack_delay=0.0, now=now, space=space)
            states.append(
                (
                    _recovery_state(recovery, space),
                    [
                        (list(s._acked), list(s._pending), s._buffer_start, s.is_finished)
                        for s in senders
                    ],
                )
            )
        assert states[0] == states[1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 1452), st.booleans()), min_size=1, max_size=60),
    st.sampled_from(["slow start", "first avoidance", "after loss", "avoiding"]),
    st.floats(0.0, 5.0),
    st.floats(0.001, 0.5),
    st.integers(2, 400),
)
def test_batched_cubic_matches_aioquic_packet_by_packet(
    packets: list[tuple[int, bool]], phase: str, elapsed: float, rtt: float, window_packets: int
) -> None:
    """cubic_packets_acked leaves CUBIC in exactly the state aioquic's on_packet_acked
    does, called packet by packet: in slow start, crossing into congestion avoidance
    (with and without a loss), and well into it (every attribute compared)."""
    sides = []
    for _ in range(2):
        cc = CubicCongestionControl(max_datagram_size=1452)
        cc.rtt = rtt
        cc.congestion_window = window_packets * 1452
        cc.bytes_in_flight = 10_000_000
        if phase != "slow start":
            cc.ssthresh = cc.congestion_window // 2
        if phase == "after loss":
            cc._W_max = cc.congestion_window * 2
            cc._starting_congestion_avoidance = True
        if phase == "avoiding":
            cc._first_slow_start = False
            cc._W_max = cc.congestion_window + 7 * 1452
            cc.K = 1.5
            cc._t_epoch = 100.0
            cc._W_est = cc.congestion_window - 3000
        sides.append(cc)
    records = [
        QuicSentPacket(
            epoch=tls.Epoch.ONE_RTT, in_flight=in_flight, is_ack_eliciting=True,
            is_crypto_packet=False, packet_number=n, packet_type=QuicPacketType.ONE_RTT,
            sent_time=100.0 + n * 0.0001, sent_bytes=size,
        )
        for n, (size, in_flight) in enumerate(packets)
    ]  # fmt: skip
    now = 100.0 + elapsed
    for record in records:
        if record.in_flight:
            sides[0].on_packet_acked(packet=record, now=now)
    compat.cubic_packets_acked(sides[1], records, now)
    assert _cubic_state(sides[1]) == _cubic_state(sides[0])


def test_sent_packet_fields_are_in_the_order_native_bursts_pass_them() -> None:
    """Native bursts build QuicSentPacket records with positional arguments."""
    assert [f.name for f in dataclasses.fields(QuicSentPacket)] == [
        "epoch", "in_flight", "is_ack_eliciting", "is_crypto_packet", "packet_number",
        "packet_type", "sent_time", "sent_bytes", "delivery_handlers", "quic_logger_frames",
    ]  # fmt: skip


def test_stream_data_waiting_is_what_is_written_and_not_sent() -> None:
    """Waiting: data or a FIN written and not yet sent; not waiting once a frame took it
    all, although aioquic's buffer_is_empty only turns true at the next pass."""

    class _Stream:
        def __init__(self, sender: QuicStreamSender) -> None:
            self.sender = sender

    class _Quic:
        def __init__(self) -> None:
            self._streams_queue: list[_Stream] = []

    quic = _Quic()
    for sender in (QuicStreamSender(0, True), ChunkedStreamSender(0, True)):
        quic._streams_queue = [_Stream(sender)]
        assert not compat.stream_data_waiting(quic)  # type: ignore[arg-type]
        sender.write(b"request", end_stream=True)
        assert compat.stream_data_waiting(quic)  # type: ignore[arg-type]
        frame = sender.get_frame(1000)
        assert frame is not None and frame.fin and not sender.buffer_is_empty
        assert not compat.stream_data_waiting(quic)  # type: ignore[arg-type]


def test_tuned_window_follows_the_consumer() -> None:
    cap = 4 * 1024 * 1024
    # A whole window used within two round trips: doubled, up to the cap.
    assert compat.tuned_window(256 * 1024, cap, since_last_raise=0.001, smoothed_rtt=0.001) == (
        512 * 1024
    )
    assert compat.tuned_window(cap, cap, since_last_raise=0.0, smoothed_rtt=0.001) == cap
    # A slow consumer (or no RTT sample yet) keeps its window.
    assert compat.tuned_window(256 * 1024, cap, since_last_raise=0.5, smoothed_rtt=0.01) == (
        256 * 1024
    )
    assert compat.tuned_window(256 * 1024, cap, since_last_raise=0.0, smoothed_rtt=0.0) == (
        256 * 1024
    )


async def test_receive_windows_start_small_and_grow_to_the_cap_for_a_fast_reader(
    client,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paced receive windows start at AUTOTUNE_START and double up to the cap for a reader
    that keeps up; streams opened later on the connection start where earlier ones got.
    "Keeps up" is judged against a round trip of at least AUTOTUNE_MIN_RTT; on loopback
    that floor is the whole round trip, and a gateway and client sharing this process on a
    loaded machine may not read a window in two of its 2 ms. Each doubling is judged on
    its own (four of them from 256 KiB to 4 MiB), so one slow moment on a loaded CI machine
    stopped the growth at 2 MiB with a 50 ms floor; a 500 ms floor (a reader above 8 MB/s
    keeps up) keeps the test about the mechanism, not the machine's speed."""
    from quicstore.client.sinks import MemorySink

    monkeypatch.setattr(compat, "AUTOTUNE_MIN_RTT", 0.5)

    body = os.urandom(24 * 1024 * 1024)
    await client.put("data", "window", body)
    quic = (await client.connect()).driver.quic
    seen: list[int] = []

    class Watching(MemorySink):
        def write(self, offset, data, release):  # type: ignore[no-untyped-def]
            seen.extend(window for window, _ in quic._windows.values())
            return super().write(offset, data, release)

    await client.get_to("data", "window", lambda info, size: Watching(bytearray(size)))
    assert max(seen) == client.config.stream_window  # grew to the cap
    assert min(seen) == compat.AUTOTUNE_START  # from the start value
    # Later streams on the connection start from the window earlier ones grew to.
    seen.clear()
    await client.get_to("data", "window", lambda info, size: Watching(bytearray(size)))
    assert min(seen) == client.config.stream_window


async def varied_traffic(
    gateway: RunningGateway, client: Client, small_count: int, rounds: int, lossy_keys: int
) -> None:
    """Small and large GETs and PUTs, a range, ``rounds`` x all small GETs at once, an
    error, a listing, a delete, then GETs and a PUT through a 5 %-loss proxy (probes,
    retransmissions): every body checked."""
    small = {f"s{i}": os.urandom(100 + 97 * i) for i in range(small_count)}
    big = os.urandom(3 * 1024 * 1024 + 5)
    for key, body in small.items():
        await client.put("data", key, body)
    await client.put("data", "big", big)
    for key, body in small.items():
        assert await client.get("data", key) == body
    assert await client.get("data", "big") == big
    assert await client.get("data", "big", offset=1000, length=70_000) == big[1000:71_000]
    for _ in range(rounds):
        bodies = await asyncio.gather(*(client.get("data", key) for key in small))
        assert bodies == list(small.values())
    with pytest.raises(quicstore.NotFound):
        await client.get("data", "missing")
    assert len(await client.list_all("data")) == small_count + 1
    await client.delete("data", "s0")
    proxy = await start_proxy(
        ImpairmentConfig(loss=0.05, delay_ms=2, lifetime_s=60),
        ("127.0.0.1", 0),
        ("127.0.0.1", gateway.port),
    )
    try:
        host, port = proxy.address[:2]
        async with Client(
            f"quicstore://{host}:{port}", ca_file=gateway.tls.cert_file, server_name="localhost"
        ) as lossy:
            await lossy.put("data", "lossy", big[:500_000])
            assert await lossy.get("data", "lossy") == big[:500_000]
            keys = list(small)[1 : 1 + lossy_keys]
            for _ in range(rounds):
                bodies = await asyncio.gather(*(lossy.get("data", k) for k in keys))
                assert bodies == [small[k] for k in keys]
        assert proxy.counters.down.datagrams_dropped + proxy.counters.up.datagrams_dropped > 0
    finally:
        await proxy.close()


async def test_skipped_write_passes_would_have_written_nothing(
    gateway: RunningGateway, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every round of aioquic's _write_application that service skips (a packet left with
    SPARE_ROOM to spare) is run here instead and must write nothing: small and large GETs
    and PUTs, ranges, errors, listings, many requests at once, and a lossy path (probes,
    retransmissions), on both packet paths, at the client and at the gateway."""
    checked: list[bool] = []
    monkeypatch.setattr(compat, "skipped_pass_check", checked)
    await varied_traffic(gateway, client, small_count=20, rounds=1, lossy_keys=7)
    assert len(checked) >= 30 and all(checked), (len(checked), checked.count(False))


async def test_transmits_by_a_native_burst_alone_leave_nothing_for_aioquic(
    gateway: RunningGateway, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small request or response goes out by a native burst alone when nothing else is
    due; after each such transmit aioquic's own pass runs here and must write nothing (no
    frame the fast path should have left to it): small and large GETs and PUTs, ranges,
    errors, listings, deletes, 40 requests at once (streams discarded, MAX_STREAMS), and a
    lossy path (probes, retransmissions), at the client and at the gateway."""
    checked: list[bool] = []
    monkeypatch.setattr(compat, "small_send_check", checked)
    await varied_traffic(gateway, client, small_count=40, rounds=3, lossy_keys=19)
    quic = (await client.connect()).driver.quic
    assert isinstance(quic, compat.AppPacedQuicConnection)
    served = [s.quic for s in gateway.gateway.sessions]
    if compat.native_packet_path():
        assert quic.native_sends_alone > 40
        assert sum(getattr(q, "native_sends_alone", 0) for q in served) > 40
        assert len(checked) > 80
    else:  # aioquic's packet protection: no native bursts
        assert quic.native_sends_alone == 0
    assert all(checked), (len(checked), checked.count(False))


def test_no_round_is_skipped_while_a_stream_has_a_second_range_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round writes one STREAM frame per stream: with a lost range and new data both
    pending, the second round writes the new data although the first left room, so only the
    third is skipped (a skip after the first was seen once under ASan, where a lossy
    transfer left such a stream); with one range pending the second round is skipped."""
    from tests.transport.test_native import _Link

    checked: list[bool] = []
    monkeypatch.setattr(compat, "skipped_pass_check", checked)
    link = _Link(loss=0.0, seed=1, size=1452, bursts=False)
    link.run_until(lambda: link.client._handshake_confirmed)
    client = link.client
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, os.urandom(600))
    assert client.datagrams_to_send(now=link.now)
    sender = client._streams[stream_id].sender
    sender.on_data_delivery(QuicDeliveryState.LOST, 100, 300, False)
    client.send_stream_data(stream_id, os.urandom(300))
    assert [(r.start, r.stop) for r in sender._pending] == [(100, 300), (600, 900)]
    checked.clear()
    assert client.datagrams_to_send(now=link.now)
    assert not len(sender._pending)  # both ranges went out in this transmit
    assert checked == [True]  # the round after the second range was skippable: nothing left
    client.send_stream_data(stream_id, os.urandom(300), end_stream=True)
    assert client.datagrams_to_send(now=link.now)
    assert checked == [True, True]


async def test_acks_of_whole_messages_are_handled_after_the_next_send_as_at_receipt(
    gateway: RunningGateway, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request (or response) arriving whole with nothing waiting to be sent has its ACK
    frames handled after the answer (or next request) is sent: each deferral is settled
    after a send (or first thing in the next receive or timer), with the time of its
    receipt, and no transmit leaves one pending. Sequential and concurrent GETs, PUTs and
    a lossy path all deliver their bodies unchanged."""
    from quicstore.transport.endpoint import QuicDriver

    log: list[tuple[str, int]] = []  # (what, connection)
    deferred_at: dict[int, float] = {}  # connection -> receipt of its pending deferral
    settling: dict[int, float] = {}
    handled_at: list[tuple[float, float]] = []  # (receipt, time the ACK was handled as of)
    receive = compat.AppPacedQuicConnection._receive_natively
    settle = compat.AppPacedQuicConnection.settle_acks
    handle_ack = compat.AppPacedQuicConnection._handle_ack_frame
    transmit = QuicDriver.transmit

    def receiving(self, datagrams, addr, now):  # type: ignore[no-untyped-def]
        before = self.acks_deferred
        done = receive(self, datagrams, addr, now)
        if self.acks_deferred > before:
            log.append(("defer", id(self)))
            deferred_at[id(self)] = now
        return done

    def settling_acks(self):  # type: ignore[no-untyped-def]
        if id(self) in deferred_at:
            settling[id(self)] = deferred_at.pop(id(self))
        try:
            settled = settle(self)
        finally:
            settling.pop(id(self), None)
        if settled:
            log.append(("settle", id(self)))
        return settled

    def handling(self, context, frame_type, buf):  # type: ignore[no-untyped-def]
        if id(self) in settling:
            handled_at.append((settling[id(self)], context.time))
        return handle_ack(self, context, frame_type, buf)

    def transmitting(self):  # type: ignore[no-untyped-def]
        send, send_batch = self._send, self._send_batch

        def sending(*args):  # type: ignore[no-untyped-def]
            log.append(("send", id(self.quic)))
            return send(*args)

        def sending_batch(*args):  # type: ignore[no-untyped-def]
            log.append(("send", id(self.quic)))
            return send_batch(*args)

        self._send, self._send_batch = sending, sending_batch if send_batch else None
        try:
            transmit(self)
        finally:
            self._send, self._send_batch = send, send_batch
        assert not getattr(self.quic, "_deferred_acks", None), "a transmit left ACKs pending"

    monkeypatch.setattr(compat.AppPacedQuicConnection, "_receive_natively", receiving)
    monkeypatch.setattr(compat.AppPacedQuicConnection, "settle_acks", settling_acks)
    monkeypatch.setattr(compat.AppPacedQuicConnection, "_handle_ack_frame", handling)
    monkeypatch.setattr(QuicDriver, "transmit", transmitting)

    bodies = {f"k{i}": os.urandom(50 + 1000 * i) for i in range(10)}
    for key, body in bodies.items():
        await client.put("seq", key, body)
    for _ in range(3):
        for key, body in bodies.items():
            assert await client.get("seq", key) == body
    await varied_traffic(gateway, client, small_count=10, rounds=2, lossy_keys=5)

    deferrals = [i for i, (what, _) in enumerate(log) if what == "defer"]
    if not compat.native_packet_path():
        assert not deferrals  # aioquic's receive path handles every frame in place
        return
    assert len(deferrals) >= 60  # both sides, most sequential requests
    after_send = 0
    for index in deferrals:
        conn = log[index][1]
        later = [what for what, c in log[index + 1 :] if c == conn]
        assert "settle" in later, "a deferral was never settled"
        first = later.index("settle")
        after_send += "send" in later[:first]
    assert after_send >= len(deferrals) * 3 // 4
    assert len(handled_at) >= len(deferrals)  # each deferral holds at least one ACK frame
    assert all(receipt == at for receipt, at in handled_at)
