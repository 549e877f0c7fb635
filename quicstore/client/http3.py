"""A small HTTP/3 (and hq-interop) client on quicstore's transport.

For standard-protocol access to a gateway (or any HTTP/3 server), the interop suite, and
tests of the h3 front end. It exposes what interop test cases need: session tickets for
resumption and 0-RTT, key updates, cipher suites, QUIC versions, qlog and key logs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.h0.connection import H0Connection
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicFileLogger
from aioquic.tls import CipherSuite, SessionTicket

from ..errors import ConnectionFailed
from ..transport.endpoint import QuicDriver, connect_quic
from .tls import read_ca_file

ALPN_H3 = "h3"
ALPN_HQ = "hq-interop"


class _ClientH3Connection(H3Connection):
    """aioquic 1.7.2's client checks a response's content-length against its DATA even for
    HEAD, whose content-length describes the GET it stands for (RFC 9110, 9.3.2)."""

    def __init__(self, quic: Any) -> None:
        super().__init__(quic)
        self.head_streams: set[int] = set()

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id in self.head_streams:
            return
        super()._check_content_length(stream)


@dataclass
class HttpResponse:
    """A complete response: status (0 for hq-interop, which has none), header fields with
    lowercase names (repeated fields joined by ", "), and the body."""

    status: int
    headers: dict[str, str]
    body: bytes
    stream_id: int
    trailers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Pending:
    future: asyncio.Future[HttpResponse]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    headers_done: bool = False
    on_data: Callable[[bytes], None] | None = None


class _Handler:
    def __init__(self, client: Http3Client, driver: QuicDriver, alpn: str) -> None:
        self.client = client
        self.http: _ClientH3Connection | H0Connection = (
            H0Connection(driver.quic) if alpn == ALPN_HQ else _ClientH3Connection(driver.quic)
        )

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        client = self.client
        if isinstance(event, qe.HandshakeCompleted):
            client.handshake = event
        elif isinstance(event, qe.ConnectionTerminated):
            for pending in client.pending.values():
                if not pending.future.done():
                    pending.future.set_exception(
                        ConnectionFailed(f"connection closed: {event.reason_phrase}")
                    )
            client.pending.clear()
            return
        elif isinstance(event, qe.StreamReset):
            reset = client.pending.pop(event.stream_id, None)
            if reset is not None and not reset.future.done():
                reset.future.set_exception(
                    ConnectionFailed(f"stream reset with code 0x{event.error_code:x}")
                )
        for h_event in self.http.handle_event(event):
            if not isinstance(h_event, h3e.HeadersReceived | h3e.DataReceived):
                continue
            found = client.pending.get(h_event.stream_id)
            if found is None:
                continue
            pending = found
            if isinstance(h_event, h3e.HeadersReceived):
                target = pending.trailers if pending.headers_done else pending.headers
                for name, value in h_event.headers:
                    key = name.decode("latin-1")
                    if key == ":status":
                        pending.status = int(value)
                    else:
                        text = value.decode("latin-1")
                        target[key] = f"{target[key]}, {text}" if key in target else text
                pending.headers_done = (
                    pending.headers_done
                    or pending.status >= 200
                    or isinstance(self.http, H0Connection)
                )
            elif isinstance(h_event, h3e.DataReceived):
                if pending.on_data is not None:
                    pending.on_data(h_event.data)
                else:
                    pending.body += h_event.data
            if h_event.stream_ended and not pending.future.done():
                client.pending.pop(h_event.stream_id, None)
                pending.future.set_result(
                    HttpResponse(
                        pending.status,
                        pending.headers,
                        bytes(pending.body),
                        h_event.stream_id,
                        pending.trailers,
                    )
                )


class Http3Client:
    """One HTTP/3 or hq-interop connection. Use :meth:`connect`."""

    def __init__(self) -> None:
        self.driver: QuicDriver | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.handler: _Handler | None = None
        self.pending: dict[int, _Pending] = {}
        self.tickets: list[SessionTicket] = []
        """Session tickets the server issued (for resumption and 0-RTT)."""
        self.handshake: qe.HandshakeCompleted | None = None
        self.authority = ""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        alpn: str = ALPN_H3,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        server_name: str | None = None,
        session_ticket: SessionTicket | None = None,
        cipher_suites: Sequence[CipherSuite] | None = None,
        versions: Sequence[int] | None = None,
        original_version: int | None = None,
        qlog_dir: str | Path | None = None,
        key_log: Any = None,
        wait_handshake: bool = True,
        max_datagram_size: int | None = None,
    ) -> Http3Client:
        """Open a connection. With ``session_ticket`` and ``wait_handshake=False``, requests
        sent at once travel as 0-RTT data."""
        client = cls()
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[alpn],
            server_name=server_name or host,
            max_datagram_size=max_datagram_size or 1200,
        )
        if insecure:
            config.verify_mode = ssl.CERT_NONE
        elif ca_file is not None:
            config.load_verify_locations(cadata=read_ca_file(ca_file))
        if session_ticket is not None:
            config.session_ticket = session_ticket
        if cipher_suites:
            config.cipher_suites = list(cipher_suites)
        if versions:
            config.supported_versions = list(versions)
        if original_version is not None:
            config.original_version = original_version
        if qlog_dir is not None:
            Path(qlog_dir).mkdir(parents=True, exist_ok=True)
            config.quic_logger = QuicFileLogger(str(qlog_dir))
        if key_log is not None:
            config.secrets_log_file = key_log

        def make_handler(driver: QuicDriver) -> _Handler:
            client.handler = _Handler(client, driver, alpn)
            return client.handler

        try:
            client.driver, client.transport = await connect_quic(
                host,
                port,
                config,
                make_handler,
                session_ticket_handler=client.tickets.append,
                wait_handshake=wait_handshake,
                datagram_cap=max_datagram_size,
            )
        except (OSError, ConnectionError) as exc:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc}") from None
        client.authority = f"{host}:{port}"
        return client

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        trailers: Sequence[tuple[str, str]] = (),
        on_data: Callable[[bytes], None] | None = None,
    ) -> HttpResponse:
        """Send one request and wait for the whole response. With ``on_data``, the response
        body is handed to it piece by piece as it arrives (and not kept: the response's
        ``body`` is empty)."""
        assert self.driver is not None and self.handler is not None
        http = self.handler.http
        stream_id = self.driver.quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"quicstore"),
        ]
        fields += [(k.lower().encode(), v.encode()) for k, v in headers]
        future: asyncio.Future[HttpResponse] = self.driver.loop.create_future()
        self.pending[stream_id] = _Pending(future, on_data=on_data)
        if method == "HEAD" and isinstance(http, _ClientH3Connection):
            http.head_streams.add(stream_id)
        has_body = bool(body) or bool(trailers)
        http.send_headers(stream_id, fields, end_stream=not has_body)
        if body:
            http.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            assert isinstance(http, H3Connection)
            http.send_headers(
                stream_id, [(k.encode(), v.encode()) for k, v in trailers], end_stream=True
            )
        self.driver.transmit()
        return await future

    async def get(self, path: str, **kw: Any) -> HttpResponse:
        return await self.request("GET", path, **kw)

    def request_key_update(self) -> None:
        """Start a key update (the next 1-RTT packets use new keys)."""
        assert self.driver is not None
        self.driver.quic.request_key_update()
        self.driver.transmit()

    async def wait_for_ticket(self, timeout: float = 5.0) -> SessionTicket | None:
        """The first session ticket, once the server has sent one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.tickets and loop.time() < deadline:
            assert self.driver is not None
            await asyncio.wait([self.driver.closed], timeout=0.05)  # tickets follow the handshake
        return self.tickets[0] if self.tickets else None

    async def close(self) -> None:
        """Close the connection and wait (bounded) until it is gone."""
        if self.driver is not None:
            self.driver.close()
            await asyncio.wait([self.driver.closed], timeout=1.0)
        if self.transport is not None:
            self.transport.close()
