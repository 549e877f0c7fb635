"""The asyncio driver (transport/endpoint.py): its pure pieces, and what it does with lone
datagrams and time; the driver itself runs in every loopback end-to-end test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import types

import pytest
from aioquic.quic import events as qe
from hypothesis import given, settings
from hypothesis import strategies as st

from quicstore.client.client import Client
from quicstore.server.app import RunningGateway
from quicstore.transport.compat import AppPacedQuicConnection
from quicstore.transport.endpoint import (
    TRANSMIT_AFTER_MESSAGES,
    QuicDriver,
    coalesce_stream_data,
    quic_clock,
)

# A script of events: data on one of three streams (maybe ending it), or another event.
script = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, 2), st.binary(max_size=8), st.booleans()),
        st.tuples(st.just("reset"), st.integers(0, 2)),
        st.just(("ping",)),
    ),
    max_size=40,
)


def _events(steps: list[tuple[object, ...]]) -> list[qe.QuicEvent]:
    events: list[qe.QuicEvent] = []
    ended: set[int] = set()
    for step in steps:
        if step[0] == "data":
            _, stream, data, end = step
            assert isinstance(stream, int) and isinstance(data, bytes)
            if stream in ended:
                continue  # aioquic delivers nothing on a stream after its end
            if end:
                ended.add(stream)
            events.append(qe.StreamDataReceived(data=data, end_stream=bool(end), stream_id=stream))
        elif step[0] == "reset":
            stream = step[1]
            assert isinstance(stream, int)
            ended.add(stream)
            events.append(qe.StreamReset(error_code=1, stream_id=stream))
        else:
            events.append(qe.PingAcknowledged(uid=len(events)))
    return events


def _per_stream(events: list[qe.QuicEvent]) -> dict[int, list[tuple[str, bytes, bool]]]:
    """Each stream's view: its bytes between other events, its ends and resets."""
    seen: dict[int, list[tuple[str, bytes, bool]]] = {}
    for event in events:
        if isinstance(event, qe.StreamDataReceived):
            view = seen.setdefault(event.stream_id, [])
            if view and view[-1][0] == "data" and not view[-1][2]:
                view[-1] = ("data", view[-1][1] + event.data, event.end_stream)
            else:
                view.append(("data", event.data, event.end_stream))
        elif isinstance(event, qe.StreamReset):
            seen.setdefault(event.stream_id, []).append(("reset", b"", True))
    return seen


@settings(max_examples=500, deadline=None)
@given(script)
def test_coalescing_keeps_what_each_stream_sees(steps: list[tuple[object, ...]]) -> None:
    """Same bytes, ends and resets per stream; other events in their order; data never
    crosses another kind of event; at most one data event per stream between two such."""
    events = _events(steps)
    out = coalesce_stream_data(events)
    assert _per_stream(out) == _per_stream(events)
    others = [e for e in events if not isinstance(e, qe.StreamDataReceived)]
    assert [e for e in out if not isinstance(e, qe.StreamDataReceived)] == others

    def segments(seq: list[qe.QuicEvent]) -> list[dict[int, bytes]]:
        runs: list[dict[int, bytes]] = [{}]
        for e in seq:
            if isinstance(e, qe.StreamDataReceived):
                runs[-1][e.stream_id] = runs[-1].get(e.stream_id, b"") + e.data
            else:
                runs.append({})
        return runs

    assert segments(out) == segments(events)
    for run in _runs_of_data(out):
        ids = [e.stream_id for e in run if not e.end_stream]
        assert len(ids) == len(set(ids))


def _runs_of_data(events: list[qe.QuicEvent]) -> list[list[qe.StreamDataReceived]]:
    runs: list[list[qe.StreamDataReceived]] = [[]]
    for e in events:
        if isinstance(e, qe.StreamDataReceived):
            runs[-1].append(e)
        else:
            runs.append([])
    return runs


def test_a_burst_of_one_stream_becomes_one_event() -> None:
    events: list[qe.QuicEvent] = [
        qe.StreamDataReceived(data=bytes([i]) * 3, end_stream=i == 4, stream_id=8) for i in range(5)
    ]
    assert coalesce_stream_data(events) == [
        qe.StreamDataReceived(
            data=b"".join(bytes([i]) * 3 for i in range(5)), end_stream=True, stream_id=8
        )
    ]


async def test_lone_datagrams_take_the_native_receive_path(
    gateway: RunningGateway, packet_path: str
) -> None:
    """Small responses arrive one datagram at a time; the driver hands each one to the
    native receive path too (not only batches), and the Python path never opens one."""
    async with Client(gateway.url, ca_file=gateway.tls.cert_file) as client:
        session = await client.connect()
        await client.put("b", "small", b"s" * 4096)
        quic = session.driver.quic
        assert isinstance(quic, AppPacedQuicConnection)
        before = quic.native_packets_received
        for _ in range(20):
            assert await client.get("b", "small") == b"s" * 4096
        opened = quic.native_packets_received - before
        if packet_path == "native":
            assert opened >= 18  # a packet with other frames (MAX_STREAMS) goes to aioquic
        else:
            assert opened == 0


async def test_the_next_request_leaves_with_the_transmit_a_response_set_off(
    gateway: RunningGateway,
) -> None:
    """A response's receive schedules its transmit after the callbacks that wake the
    waiting task: the next request goes out in that transmit, instead of an aioquic pass
    that builds nothing followed by another for the request."""
    async with Client(gateway.url, ca_file=gateway.tls.cert_file) as client:
        session = await client.connect()
        await client.put("b", "small", b"s" * 4096)
        quic = session.driver.quic
        built = quic.datagrams_to_send
        empty = 0

        def counting(now: float) -> list[tuple[bytes, object]]:
            nonlocal empty
            datagrams = built(now=now)
            empty += not datagrams
            return datagrams  # type: ignore[return-value]

        quic.datagrams_to_send = counting  # type: ignore[method-assign]
        for _ in range(20):
            await client.get("b", "small")
        assert empty <= 3  # one per GET (20) when the transmit ran before the task


@pytest.mark.parametrize("stream_ended", [True, False])
def test_a_receive_that_ends_a_stream_lets_the_woken_task_write_first(
    stream_ended: bool,
) -> None:
    """After a receive that ended a stream, the transmit runs after a task woken two
    callbacks later; after a mid-stream receive (ACKs and window updates keeping a transfer
    going) it runs at once."""
    loop = asyncio.new_event_loop()
    try:
        quic = types.SimpleNamespace(_streams_queue=[])
        driver = QuicDriver(quic, lambda data, addr: None, loop=loop)  # type: ignore[arg-type]
        order: list[str] = []
        driver.transmit = lambda: order.append("transmit")  # type: ignore[method-assign]
        # The response's future wakes the task through one more callback (asyncio.wait's).
        loop.call_soon(lambda: loop.call_soon(order.append, "task"))
        driver._stream_ended = stream_ended
        driver._transmit_after_handlers()
        for _ in range(3):
            loop.call_soon(loop.stop)
            loop.run_forever()
        assert order == (["task", "transmit"] if stream_ended else ["transmit", "task"])
    finally:
        loop.close()


def test_every_sixteenth_queued_message_is_sent_at_once_the_rest_at_the_end_of_the_pass() -> None:
    """A batch of requests answered in one pass: the responses leave every
    TRANSMIT_AFTER_MESSAGES (16), not all at the end, so the peer starts on them while the
    rest are being written. Other transmit_soon calls (window updates) only schedule."""
    loop = asyncio.new_event_loop()
    try:
        sends: list[int] = []  # messages queued when each transmit ran
        queued = 0

        def datagrams_to_send(now: float) -> list[tuple[bytes, object]]:
            sends.append(queued)
            return []

        quic = types.SimpleNamespace(
            _streams_queue=[],
            datagrams_to_send=datagrams_to_send,
            next_event=lambda: None,
            get_timer=lambda: None,
        )
        driver = QuicDriver(quic, lambda data, addr: None, loop=loop)  # type: ignore[arg-type]
        assert TRANSMIT_AFTER_MESSAGES == 16
        for _ in range(5):
            driver.transmit_soon()  # not a message: never sends by itself
        assert sends == []
        for _ in range(40):
            queued += 1
            driver.transmit_soon(message=True)
        assert sends == [16, 32]  # at once, twice; the last 8 wait for the end of the pass
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert sends == [16, 32, 40]
    finally:
        loop.close()


def test_the_quic_clock_is_finer_than_a_millisecond() -> None:
    """Connections read a clock that resolves well under the 1 ms ACK delay (uvloop's
    loop.time() does not), on the base loop.call_at uses."""
    readings = {quic_clock() for _ in range(1000)}
    steps = sorted(b - a for a, b in itertools.pairwise(sorted(readings)))
    assert steps and steps[0] < 1e-4
    loops = [asyncio.new_event_loop()]
    with contextlib.suppress(ImportError):
        import uvloop

        loops.append(uvloop.new_event_loop())
    for loop in loops:
        try:
            assert abs(loop.time() - quic_clock()) < 0.01
        finally:
            loop.close()
