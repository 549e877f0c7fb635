"""The gateway end to end over loopback QUIC (issue: the gateway)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

import quicstore
from quicstore.client.client import Client
from quicstore.proto import events as ev
from quicstore.proto.codes import ALPN, ErrorCode, FrameType
from quicstore.proto.connection import QuicstoreConnection
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import ErrorFrame, encode_frame_header
from quicstore.proto.messages import RequestHeader
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.transport import compat
from quicstore.transport.endpoint import QuicDriver, connect_quic, paced_quic_factory

MIB = 1024 * 1024


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, MIB + 1, 5 * MIB + 12345])
async def test_put_then_get_is_byte_identical(client: Client, size: int) -> None:
    body = os.urandom(size)
    info = await client.put("data", f"obj-{size}", body)
    assert info.size == size and info.sha256 == hashlib.sha256(body).digest()
    assert sha(await client.get("data", f"obj-{size}")) == sha(body)


@pytest.mark.slow
async def test_256_mib_round_trip(client: Client) -> None:
    body = os.urandom(256 * MIB)
    await client.put("data", "big", body)
    assert sha(await client.get("data", "big")) == sha(body)


@pytest.mark.parametrize(
    ("fields", "start", "end"),
    [
        ({"offset": 0, "length": 1000}, 0, 1000),
        ({"offset": 1_500_000, "length": 70_000}, 1_500_000, 1_570_000),
        ({"offset": 3_000_000 - 10}, 3_000_000 - 10, 3_000_000),
        ({"suffix": 100_000}, 2_900_000, 3_000_000),
        ({"offset": 65536 * 3, "length": 65536}, 65536 * 3, 65536 * 4),
    ],
)
async def test_ranged_gets(client: Client, fields: dict[str, int], start: int, end: int) -> None:
    body = os.urandom(3_000_000)
    await client.put("data", "ranged", body)
    result, data = await client.get_with_info("data", "ranged", **fields)  # type: ignore[arg-type]
    assert bytes(data) == body[start:end]
    assert (result.offset, result.length) == (start, end - start)


async def test_small_gets_are_verified_block_by_block(
    tmp_path: Path, gateway: RunningGateway, client: Client
) -> None:
    """Small GETs go out in one write after every block they touch passed its check; a
    failing block sends them down the streaming path, which names it."""
    body = os.urandom(100_000)  # blocks 0 (0-65535) and 1 (65536-99999)
    await client.put("data", "small", body)
    (data_file,) = (tmp_path / "gw" / "store" / "data").rglob("*.obj")
    with data_file.open("r+b") as f:  # flip one bit in block 1
        f.seek(70_000)
        byte = f.read(1)
        f.seek(70_000)
        f.write(bytes([byte[0] ^ 0x10]))
    metrics = gateway.gateway.metrics
    assert bytes(await client.get("data", "small", offset=1000, length=4096)) == body[1000:5096]
    assert bytes(await client.get("data", "small", length=65536)) == body[:65536]
    assert metrics.integrity_failures == 0
    for fields in ({"offset": 80_000, "length": 100}, {"offset": 60_000, "length": 10_000}):
        with pytest.raises(quicstore.IntegrityError, match="block 1"):
            await client.get("data", "small", **fields)
    # The client tries each three times; the gateway counts each try's failure once.
    assert metrics.integrity_failures == 6
    with pytest.raises(quicstore.IntegrityError):
        await client.get("data", "small")
    assert bytes(await client.get("data", "small", length=10)) == body[:10]


async def test_a_lone_small_get_is_answered_before_its_bookkeeping(
    gateway: RunningGateway, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no other request in progress, a small GET's response leaves in a transmit of its
    own as soon as it is written (the metrics and access log after it); with requests in
    flight together, responses share transmits. (A timer may add an empty transmit.)"""
    order: list[str] = []
    sessions = gateway.gateway.sessions
    transmit = QuicDriver.transmit
    finished = gateway.gateway.metrics.request_finished

    def transmitting(self: QuicDriver) -> None:
        sent = self.datagrams_sent
        transmit(self)
        if any(s.driver is self for s in sessions):
            order.append("sent" if self.datagrams_sent > sent else "empty")

    def request_finished(*args: object) -> None:
        order.append("finished")
        finished(*args)  # type: ignore[arg-type]

    await client.put("data", "lone", b"y" * 3000)
    monkeypatch.setattr(QuicDriver, "transmit", transmitting)
    monkeypatch.setattr(gateway.gateway.metrics, "request_finished", request_finished)
    for _ in range(10):
        assert await client.get("data", "lone") == b"y" * 3000
    assert [what for what in order if what != "empty"] == ["sent", "finished"] * 10
    order.clear()
    bodies = await asyncio.gather(*(client.get("data", "lone") for _ in range(20)))
    assert all(body == b"y" * 3000 for body in bodies)
    assert order.count("finished") == 20 and order.count("sent") < 20


async def test_range_past_the_end(client: Client) -> None:
    await client.put("data", "small", b"0123456789")
    with pytest.raises(quicstore.RangeNotSatisfiable):
        await client.get("data", "small", offset=10)


async def test_stat_list_delete_and_conditions(client: Client) -> None:
    first = await client.put("data", "a/1", b"one", content_type="text/plain", meta={"k": "v"})
    await client.put("data", "a/2", b"two")
    await client.put("data", "b/1", b"three")
    info = await client.stat("data", "a/1")
    assert (info.size, info.etag, info.content_type, info.meta) == (
        3,
        first.etag,
        "text/plain",
        {"k": "v"},
    )
    assert [e.key for e in await client.list_all("data", prefix="a/")] == ["a/1", "a/2"]
    pages = [p async for p in client.list("data", delimiter="/")]
    assert [p for page in pages for p in page.prefixes] == ["a/", "b/"]
    with pytest.raises(quicstore.PreconditionFailed):
        await client.put("data", "a/1", b"new", if_none_match="*")
    with pytest.raises(quicstore.PreconditionFailed):
        await client.delete("data", "a/1", if_match="0" * 32)
    assert await client.delete("data", "a/1", if_match=first.etag) == first.etag
    with pytest.raises(quicstore.NotFound):
        await client.stat("data", "a/1")


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("../../etc/passwd", ErrorCode.QS_INVALID_KEY),
        ("a//b", ErrorCode.QS_INVALID_KEY),
        ("k" * 1025, ErrorCode.QS_KEY_TOO_LONG),
        ("a\x00b", ErrorCode.QS_INVALID_KEY),
    ],
)
async def test_hostile_keys_are_refused_and_touch_nothing(
    client: Client, gateway: RunningGateway, key: str, error: int
) -> None:
    before = {p for p in gateway.gateway.config.root.parent.rglob("*")}
    with pytest.raises(quicstore.InvalidRequest) as exc:
        await client.put("data", key, b"x")
    assert exc.value.code == error
    with pytest.raises(quicstore.InvalidRequest):
        await client.get("data", key)
    after = {p for p in gateway.gateway.config.root.parent.rglob("*")}
    assert {p for p in after - before if "store" not in p.parts} == set()
    await client.put("data", "fine", b"still serving")
    assert await client.get("data", "fine") == b"still serving"


async def test_oversized_metadata_is_refused(client: Client) -> None:
    with pytest.raises(quicstore.InvalidRequest) as exc:
        await client.put("data", "k", b"x", meta={"big": "v" * 9000})
    assert exc.value.code == ErrorCode.QS_METADATA_TOO_LARGE


async def raw_connection(
    gateway: RunningGateway,
    *,
    consume: bool = True,
    stream_window: int = 1 * MIB,
    raw: list[qe.QuicEvent] | None = None,
) -> tuple[QuicDriver, QuicstoreConnection, list[ev.Event], asyncio.DatagramTransport]:
    """A bare protocol connection for tests that misbehave on purpose."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name="localhost",
        max_stream_data=stream_window,
        max_data=4 * stream_window,
    )
    config.load_verify_locations(cafile=str(gateway.tls.cert_file))
    received: list[ev.Event] = []
    holder: list[QuicstoreConnection] = []

    class Handler:
        def __init__(self, driver: QuicDriver) -> None:
            quic = driver.quic
            holder.append(QuicstoreConnection(quic, is_client=True, flow=quic))  # type: ignore[arg-type]

        def quic_event_received(self, event: qe.QuicEvent) -> None:
            if raw is not None:
                raw.append(event)
            for e in holder[0].handle_event(event):
                received.append(e)
                if consume and isinstance(e, ev.DataReceived):
                    holder[0].data_consumed(e.stream_id, len(e.data))

    driver, transport = await connect_quic(
        gateway.host,
        gateway.port,
        config,
        Handler,
        quic_factory=paced_quic_factory(stream_window, 4 * stream_window),
    )
    return driver, holder[0], received, transport


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll a condition on the event loop (the transfer runs in the same loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_malformed_frames_get_codes_and_others_keep_being_served(
    client: Client, gateway: RunningGateway
) -> None:
    await client.put("data", "ok", b"fine")
    raw: list[qe.QuicEvent] = []
    driver, _qs, received, transport = await raw_connection(gateway, raw=raw)
    sid = driver.quic.get_next_available_stream_id()
    driver.quic.send_stream_data(
        sid, encode_frame_header(FrameType.REQUEST, 2) + b"\xc1\xc1", end_stream=True
    )
    driver.transmit()

    def answer() -> bytes:
        return b"".join(
            e.data for e in raw if isinstance(e, qe.StreamDataReceived) and e.stream_id == sid
        )

    await wait_for(
        lambda: any(
            isinstance(e, qe.StreamDataReceived) and e.stream_id == sid and e.end_stream
            for e in raw
        )
    )
    (frame,) = FrameReader(65536).feed(answer(), end_stream=True)
    assert isinstance(frame, ErrorFrame) and frame.code == ErrorCode.QS_MESSAGE_ERROR
    # The connection-level violation: DATA before REQUEST closes that connection only.
    sid2 = driver.quic.get_next_available_stream_id()
    driver.quic.send_stream_data(sid2, b"\x00\x01x", end_stream=True)
    driver.transmit()
    await wait_for(lambda: driver.closed.done())
    assert any(
        isinstance(e, ev.ConnectionTerminated) and e.code == ErrorCode.QS_FRAME_UNEXPECTED
        for e in received
    )
    transport.close()
    assert await client.get("data", "ok") == b"fine"


async def test_stalled_reader_holds_the_gateway_to_its_windows(
    gateway: RunningGateway, client: Client
) -> None:
    body = os.urandom(24 * MIB)
    await client.put("data", "big", body)
    driver, qs, received, transport = await raw_connection(gateway, consume=False)
    sid = qs.send_request(RequestHeader(op="GET", bucket="data", key="big"))
    driver.transmit()
    gw = gateway.gateway
    window = 1 * MIB

    def stalled() -> bool:
        data = sum(len(e.data) for e in received if isinstance(e, ev.DataReceived))
        return data >= window - 64 * 1024

    await wait_for(stalled)
    # The gateway's GET is now held back waiting for send-buffer space (it tried to read on).
    await wait_for(lambda: any(s.waiters for s in gw.sessions))
    sessions = [s for s in gw.sessions if s.requests]
    assert sessions
    queued = max(compat.send_buffered(s.quic, sid) for s in sessions)
    bound = gw.config.stream_send_buffer + gw.config.read_chunk * gw.config.reads_in_flight
    assert queued <= bound
    assert gw.pool._allocated - len(gw.pool._free) <= gw.config.reads_in_flight
    # Cancelling frees the request: its reads and buffers go back to the pool.
    qs.cancel_request(sid)
    driver.transmit()
    await wait_for(lambda: all(not s.requests for s in gw.sessions))
    assert gw.pool._allocated == len(gw.pool._free)
    driver.close()
    transport.close()


async def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    running = await start_gateway(GatewayConfig(root=tmp_path, port=0, open_access=True))
    body = os.urandom(3 * MIB)  # one request (parts are 4 MiB): in flight when GOAWAY goes out
    store = running.gateway.store
    open_object = store.open
    release = asyncio.Event()
    held: list[str] = []

    async def gated_open(bucket: str, key: str) -> object:
        # The GET waits here until GOAWAY is out, so it is in flight by construction (a
        # 3 MiB GET on loopback can finish between two polls of the test).
        held.append(key)
        await release.wait()
        return await open_object(bucket, key)

    stopping: asyncio.Future[None] | None = None
    try:
        async with Client(running.url, ca_file=running.tls.cert_file, max_attempts=1) as c:
            await c.put("data", "k", body)
            store.open = gated_open  # type: ignore[method-assign]
            download = asyncio.ensure_future(c.get("data", "k"))
            await wait_for(lambda: held and any(s.requests for s in running.gateway.sessions))
            stopping = asyncio.ensure_future(running.stop(drain_timeout=30))
            await wait_for(
                lambda: all(s.qs.goaway_sent is not None for s in running.gateway.sessions)
            )
            assert not download.done()
            release.set()
            await stopping
            assert await download == body
            with pytest.raises(quicstore.ConnectionFailed):
                await c.get("data", "k")
    finally:
        if stopping is None:  # failed before the stop: do not leak the gateway's socket
            await running.stop()


async def test_tokens_are_required_by_default(tmp_path: Path) -> None:
    from quicstore.auth import mint_token
    from quicstore.server.state import active_secret

    running = await start_gateway(GatewayConfig(root=tmp_path, port=0))
    try:
        kid, secret = active_secret(tmp_path, None)
        token = mint_token(secret, kid=kid, bucket="data", ops=["read", "write"], now=0, ttl=1)
        async with Client(running.url, ca_file=running.tls.cert_file) as anonymous:
            with pytest.raises(quicstore.Unauthenticated):
                await anonymous.put("data", "k", b"x")
        async with Client(running.url, ca_file=running.tls.cert_file, token=token) as old:
            with pytest.raises(quicstore.TokenExpired):
                await old.put("data", "k", b"x")
        import time

        good = mint_token(
            secret, kid=kid, bucket="data", ops=["read", "write"], now=int(time.time()), ttl=60
        )
        async with Client(running.url, ca_file=running.tls.cert_file, token=good) as c:
            await c.put("data", "k", b"x")
            with pytest.raises(quicstore.Forbidden):
                await c.delete("data", "k")
            with pytest.raises(quicstore.Forbidden):
                await c.get("other", "k")
    finally:
        await running.stop()


async def test_wrong_pin_and_unverifiable_certificate_are_refused(gateway: RunningGateway) -> None:
    with pytest.raises(quicstore.ConnectionFailed):
        async with Client(gateway.url, pin="00" * 32) as c:
            await c.stat("data", "k")
    with pytest.raises(quicstore.ConnectionFailed):
        async with Client(gateway.url, connect_timeout=5) as c:  # no CA: system roots only
            await c.stat("data", "k")
    async with Client(gateway.url, pin=gateway.tls.fingerprint) as c:
        with pytest.raises(quicstore.NotFound):
            await c.stat("data", "k")


async def test_qlog_and_access_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    qlog = tmp_path / "qlog"
    running = await start_gateway(
        GatewayConfig(root=tmp_path / "gw", port=0, open_access=True, qlog_dir=qlog)
    )
    try:
        with caplog.at_level(logging.INFO, logger="quicstore.access"):
            async with Client(running.url, ca_file=running.tls.cert_file) as c:
                await c.put("data", "k", b"logged")
                with pytest.raises(quicstore.NotFound):
                    await c.get("data", "missing")
        records = [
            json.loads(r.getMessage()) for r in caplog.records if r.name == "quicstore.access"
        ]
        outcomes = {(r["op"], r["key"], r["outcome"]) for r in records}
        assert ("PUT", "k", "ok") in outcomes and ("GET", "missing", "QS_NOT_FOUND") in outcomes
        assert all("token" not in r for r in records)
        counters = running.gateway.metrics.snapshot()
        assert counters["requests"]["PUT ok"] == 1 and counters["bytes_received"] == 6
    finally:
        await running.stop(drain_timeout=2)
    traces = list(qlog.glob("*.qlog"))
    assert traces
    trace = json.loads(traces[0].read_bytes())["traces"][0]
    assert trace["vantage_point"]["type"] == "server"
    assert any(e["name"] == "transport:packet_received" for e in trace["events"])
