"""Trust: who gets in, and the limits that keep a gateway serving (issue: trust and survival)."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

import quicstore
from quicstore.auth import mint_token
from quicstore.certs import generate_ca, generate_self_signed, issue_certificate
from quicstore.client.client import Client
from quicstore.proto.codes import ALPN, ErrorCode, FrameType
from quicstore.proto.frames import encode_frame_header
from quicstore.proto.settings import Settings
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.server.state import active_secret

from .serverproc import QUICSTORE, GatewayProcess
from .test_gateway import raw_connection, wait_for

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    config = GatewayConfig(
        root=tmp_path / "gw",
        port=0,
        open_access=True,
        header_timeout=0.5,
        idle_timeout=1.0,
        max_connections_per_address=3,
        retry_threshold=None,
        settings=Settings(max_object_size=1000, max_list_page=3, max_concurrent_requests=2),
    )
    running = await start_gateway(config)
    yield running
    await running.stop(drain_timeout=1)


async def test_mutual_tls(tmp_path: Path) -> None:
    ca_cert, ca_key = generate_ca(now=NOW)
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    good_cert, good_key = issue_certificate(ca_cert, ca_key, now=NOW, client=True, hosts=())
    (tmp_path / "client.pem").write_bytes(good_cert)
    (tmp_path / "client.key").write_bytes(good_key)
    rogue_cert, rogue_key = generate_self_signed(now=NOW)
    (tmp_path / "rogue.pem").write_bytes(rogue_cert)
    (tmp_path / "rogue.key").write_bytes(rogue_key)
    running = await start_gateway(
        GatewayConfig(root=tmp_path / "gw", port=0, open_access=True, client_ca=tmp_path / "ca.pem")
    )
    try:
        ca = running.tls.cert_file
        async with Client(
            running.url,
            ca_file=ca,
            client_cert=tmp_path / "client.pem",
            client_key=tmp_path / "client.key",
        ) as trusted:
            await trusted.put("data", "k", b"mutual")
            assert await trusted.get("data", "k") == b"mutual"
        for cert, key in ((None, None), (tmp_path / "rogue.pem", tmp_path / "rogue.key")):
            async with Client(
                running.url, ca_file=ca, client_cert=cert, client_key=key, max_attempts=1
            ) as untrusted:
                with pytest.raises(quicstore.ConnectionFailed) as exc:
                    await untrusted.stat("data", "k")
                assert "client certificate" in str(exc.value)
        assert running.gateway.metrics.errors["client certificate"] == 2
    finally:
        await running.stop(drain_timeout=1)


def run(*args: str) -> str:
    result = subprocess.run([*QUICSTORE, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_key_rotation_accepts_both_keys_then_retires_the_old(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        old = run(
            "token", "create", "--root", str(tmp_path), "--scope", "data", "--ops", "read,write"
        ).strip()
        assert "k2" in run("token", "rotate", "--root", str(tmp_path))
        new = run(
            "token", "create", "--root", str(tmp_path), "--scope", "data", "--ops", "read,write"
        ).strip()
        os.kill(gw.pid, signal.SIGHUP)

        async def put_with(token: str) -> None:
            async with Client(gw.url, ca_file=gw.ca, token=token) as c:
                await c.put("data", "k", b"x")

        async def wait_accepts(token: str) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:  # the gateway reloads on SIGHUP asynchronously
                try:
                    await put_with(token)
                    return
                except quicstore.Unauthenticated:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.05)

        await wait_accepts(new)
        await put_with(old)  # both keys during the rollover
        run("token", "retire", "--root", str(tmp_path), "--kid", "k1")
        os.kill(gw.pid, signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                await put_with(old)
            except quicstore.Unauthenticated:
                break
            assert loop.time() < deadline, "retired key still accepted"
            await asyncio.sleep(0.05)
        await put_with(new)
    finally:
        assert gw.stop() == 0


async def test_retry_switches_on_under_a_handshake_flood(tmp_path: Path) -> None:
    running = await start_gateway(
        GatewayConfig(root=tmp_path, port=0, open_access=True, retry_threshold=3)
    )
    try:
        clients = [Client(running.url, ca_file=running.tls.cert_file) for _ in range(8)]
        await asyncio.gather(*(c.connect() for c in clients))
        assert running.gateway.endpoint is not None
        assert running.gateway.endpoint.retries_sent > 0
        for c in clients:
            with pytest.raises(quicstore.NotFound):
                await c.stat("data", "k")  # every connection, Retry or not, works
            await c.close()
    finally:
        await running.stop(drain_timeout=1)


async def test_connections_per_address_are_limited(limited: RunningGateway) -> None:
    ca = limited.tls.cert_file
    clients = [Client(limited.url, ca_file=ca) for _ in range(3)]
    for c in clients:
        await c.connect()
    started = time.monotonic()
    with pytest.raises(quicstore.ConnectionFailed):
        await Client(limited.url, ca_file=ca, max_attempts=1).connect()
    assert time.monotonic() - started < 5  # refused at once, not a timeout
    await clients[0].close()
    assert limited.gateway.endpoint is not None
    await wait_for(lambda: len(limited.gateway.endpoint.drivers) < 3)  # type: ignore[union-attr]
    async with Client(limited.url, ca_file=ca) as again:
        await again.connect()
    for c in clients[1:]:
        await c.close()


async def test_request_header_deadline(limited: RunningGateway) -> None:
    raw: list[qe.QuicEvent] = []
    driver, _, _, transport = await raw_connection(limited, raw=raw)
    sid = driver.quic.get_next_available_stream_id()
    driver.quic.send_stream_data(sid, encode_frame_header(FrameType.REQUEST, 40) + b"\x83")
    driver.transmit()  # a REQUEST header that never completes (slow-loris)
    await wait_for(
        lambda: any(isinstance(e, qe.StreamReset) and e.stream_id == sid for e in raw), timeout=5
    )
    (reset,) = [e for e in raw if isinstance(e, qe.StreamReset) and e.stream_id == sid]
    assert reset.error_code == ErrorCode.QS_REQUEST_TIMEOUT
    assert limited.gateway.metrics.errors["QS_REQUEST_TIMEOUT"] == 1
    driver.close()
    transport.close()


async def test_idle_connections_are_closed(limited: RunningGateway) -> None:
    driver, _, _, transport = await raw_connection(limited)
    await asyncio.wait_for(asyncio.shield(driver.closed), timeout=10)  # idle_timeout 1 s
    transport.close()


async def test_concurrent_requests_are_announced_as_quic_stream_limit(
    limited: RunningGateway,
) -> None:
    async with Client(limited.url, ca_file=limited.tls.cert_file) as c:
        session = await c.connect()
        assert session.driver.quic._remote_max_streams_bidi == 2
        await asyncio.gather(*(c.put("data", f"k{i}", b"x") for i in range(6)))


async def test_put_size_limit_and_list_page_limit(limited: RunningGateway) -> None:
    async with Client(limited.url, ca_file=limited.tls.cert_file) as c:
        with pytest.raises(quicstore.InvalidRequest) as exc:
            await c.put("data", "big", b"x" * 2000)
        assert exc.value.code == ErrorCode.QS_OBJECT_TOO_LARGE

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * 500

        with pytest.raises(quicstore.InvalidRequest) as exc:
            await c.put("data", "streamed", stream())
        assert exc.value.code == ErrorCode.QS_OBJECT_TOO_LARGE
        with pytest.raises(quicstore.NotFound):
            await c.stat("data", "streamed")
        for i in range(7):
            await c.put("data", f"l/{i}", b"z")
        pages = [p async for p in c.list("data", prefix="l/", limit=100)]
        assert [len(p.entries) for p in pages] == [3, 3, 1]


def big_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate whose handshake flight is well over 3 x 1200 bytes."""
    hosts = ["localhost", "127.0.0.1"] + [f"host-{i:03d}.example.test" for i in range(150)]
    ca_cert, ca_key = generate_ca(now=NOW)
    cert, key = issue_certificate(ca_cert, ca_key, now=NOW, hosts=hosts)
    (directory / "big.pem").write_bytes(cert + ca_cert)
    (directory / "big.key").write_bytes(key)
    return directory / "big.pem", directory / "big.key"


async def test_amplification_limit_before_address_validation(tmp_path: Path) -> None:
    cert, key = big_certificate(tmp_path)
    assert cert.stat().st_size > 4 * 1200
    running = await start_gateway(
        GatewayConfig(root=tmp_path / "gw", port=0, open_access=True, cert_file=cert, key_file=key)
    )
    try:
        client = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=[ALPN], server_name="localhost"
            )
        )
        client.connect(("127.0.0.1", running.port), now=time.monotonic())
        first = [d for d, _ in client.datagrams_to_send(now=time.monotonic())]
        sent = sum(len(d) for d in first)

        def exchange() -> int:
            """Send the client's first flight, then stay silent (the address is never
            validated); count what the gateway sends until it gives up (1.5 s quiet)."""
            received = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.5)
                for datagram in first:
                    sock.sendto(datagram, ("127.0.0.1", running.port))
                try:
                    while True:
                        data, _ = sock.recvfrom(65536)
                        received += len(data)
                except TimeoutError:
                    pass
            return received

        received = await asyncio.to_thread(exchange)
        print(f"sent {sent} bytes, gateway answered {received} (limit {3 * sent})")
        assert 0 < received <= 3 * sent, (received, sent)
    finally:
        await running.stop(drain_timeout=1)


async def test_tokens_never_appear_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    running = await start_gateway(GatewayConfig(root=tmp_path, port=0))
    kid, secret = active_secret(tmp_path, None)
    token = mint_token(secret, kid=kid, bucket="data", ops=["read"], now=int(time.time()), ttl=60)
    try:
        with caplog.at_level(logging.DEBUG):
            async with Client(running.url, ca_file=running.tls.cert_file, token=token) as c:
                with pytest.raises(quicstore.NotFound):
                    await c.get("data", "k")
                with pytest.raises(quicstore.Forbidden):
                    await c.put("data", "k", b"x")
    finally:
        await running.stop(drain_timeout=1)
    signature = token.rsplit(".", 1)[1]
    assert all(signature not in r.getMessage() for r in caplog.records)
