"""The wire tap and its analysis, on an in-process aioquic client and server (no peers needed).

Checks that what ``interop.wire.analyze`` reads off the tapped datagrams matches what the two
endpoints did: ALPN and cipher suite, Retry, resumption with 0-RTT, key update, QUIC v2.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import QuicEvent, StreamDataReceived
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import CipherSuite, SessionTicket

from interop.contract import write_certs
from interop.oracles import CHECKS, Evidence
from interop.testcases import BY_NAME
from interop.wire import VERSION_2, WireReport, WireTap, analyze

ALPN = "hq-interop"


class Echo(QuicConnectionProtocol):
    """Server side: echo every stream's data back and close the stream."""

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
            self.transmit()


class Client(QuicConnectionProtocol):
    """Client side: collect echoed data per stream."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.done: dict[int, asyncio.Future[bytes]] = {}
        self.buf: dict[int, bytes] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.buf[event.stream_id] = self.buf.get(event.stream_id, b"") + event.data
            if event.end_stream:
                self.done[event.stream_id].set_result(self.buf.pop(event.stream_id))

    async def echo(self, data: bytes) -> bytes:
        sid = self._quic.get_next_available_stream_id()
        self.done[sid] = asyncio.get_running_loop().create_future()
        self._quic.send_stream_data(sid, data, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(self.done[sid], 10)


_OPEN_STATES = (QuicConnectionState.FIRSTFLIGHT, QuicConnectionState.CONNECTED)


def closes_heard(server: QuicServer) -> bool:
    """Every connection ``server`` still has received its client's CONNECTION_CLOSE (it is
    closing or draining): nothing more of it will cross the tap."""
    return all(protocol._quic._state not in _OPEN_STATES for protocol in server._protocols.values())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_certs(tmp_path_factory.mktemp("certs"), datetime.datetime.now(datetime.UTC))


async def exchange(
    certs: Path,
    keylog: Path,
    *,
    retry: bool = False,
    key_update: bool = False,
    v2: bool = False,
    chacha: bool = False,
    zero_rtt: bool = False,
) -> WireReport:
    """Run one or two (resumed, 0-RTT) connections through a tap; return its analysis."""
    tickets: dict[bytes, SessionTicket] = {}
    sconf = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    sconf.load_cert_chain(certs / "cert.pem", certs / "priv.key")
    server = await serve(
        "127.0.0.1", 0, configuration=sconf, create_protocol=Echo, retry=retry,
        session_ticket_fetcher=tickets.pop, session_ticket_handler=lambda t: tickets.update(
            {t.ticket: t}),
    )  # fmt: skip
    port = server._transport.get_extra_info("sockname")[1]
    tap = WireTap(("127.0.0.1", port))
    tap_port = await tap.start()
    got: list[SessionTicket] = []
    with keylog.open("a") as secrets:
        for n in range(2 if zero_rtt else 1):
            conf = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
            conf.load_verify_locations(certs / "ca.pem")
            conf.secrets_log_file = secrets
            if chacha:
                conf.cipher_suites = [CipherSuite.CHACHA20_POLY1305_SHA256]
            if v2:
                conf.original_version = QuicProtocolVersion.VERSION_1
                conf.supported_versions = [
                    QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1
                ]  # fmt: skip
            if n == 1:
                conf.session_ticket = got[-1]
            async with connect(
                "127.0.0.1", tap_port, configuration=conf, create_protocol=Client,
                session_ticket_handler=got.append, wait_connected=n == 0,
            ) as client:  # fmt: skip
                assert isinstance(client, Client)
                assert await client.echo(b"x" * 3000) == b"x" * 3000
                if key_update:
                    client.request_key_update()
                    assert await client.echo(b"y" * 3000) == b"y" * 3000
                for _ in range(100):
                    if got:
                        break
                    await asyncio.sleep(0.01)
    # The clients' CONNECTION_CLOSE crosses the tap before the server hears it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not closes_heard(server) and loop.time() < deadline:
        await asyncio.sleep(0.01)  # polling interval, not synchronisation
    await tap.close()
    server.close()
    return analyze(tap.records, [keylog])


def evidence(report: WireReport, testcase: str) -> Evidence:
    return Evidence(BY_NAME[testcase], ALPN, report, [], {})


async def test_handshake_alpn_cipher(certs: Path, tmp_path: Path) -> None:
    report = await exchange(certs, tmp_path / "keys.log", chacha=True)
    (conn,) = report.connections
    assert conn.keys_found and conn.alpn == ALPN and conn.certificate_sent
    ev = evidence(report, "chacha20")
    for name in ("one_connection", "no_retry", "version_1", "alpn", "chacha20", "udp_payload_size"):
        assert CHECKS[name](ev).ok, CHECKS[name](ev)
    assert not CHECKS["retry"](ev).ok
    assert not CHECKS["keyupdate"](ev).ok


async def test_retry_and_key_update(certs: Path, tmp_path: Path) -> None:
    report = await exchange(certs, tmp_path / "keys.log", retry=True, key_update=True)
    ev = evidence(report, "keyupdate")
    assert CHECKS["retry"](ev).ok, CHECKS["retry"](ev)
    assert CHECKS["keyupdate"](ev).ok, CHECKS["keyupdate"](ev)
    assert not CHECKS["no_retry"](ev).ok


async def test_resumption_zero_rtt(certs: Path, tmp_path: Path) -> None:
    report = await exchange(certs, tmp_path / "keys.log", zero_rtt=True)
    ev = evidence(report, "zerortt")
    for name in ("two_connections", "resumption", "zerortt"):
        assert CHECKS[name](ev).ok, CHECKS[name](ev)
    assert report.connections[1].certificate_sent is False


async def test_v2(certs: Path, tmp_path: Path) -> None:
    report = await exchange(certs, tmp_path / "keys.log", v2=True)
    ev = evidence(report, "v2")
    assert report.connections[0].negotiated_version == VERSION_2
    assert CHECKS["version_2"](ev).ok, CHECKS["version_2"](ev)
    assert not CHECKS["version_1"](ev).ok
