"""An HTTP/3 client on qh3's asyncio API, mirroring aioquic's examples/http3_client.py.

Run by the peers venv's python (``interop.peers.qh3`` builds the command line). Each URL's body
is saved under its basename in ``--out``. Exit 0 when every URL was answered with 200 (206 with
``--range``) and saved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import deque
from urllib.parse import urlparse

from qh3 import QuicConnectionProtocol, QuicFileLogger, connect
from qh3.h3.connection import H3_ALPN, H3Connection
from qh3.h3.events import DataReceived, H3Event, HeadersReceived
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import QuicEvent
from qh3.quic.packet import QuicProtocolVersion
from qh3.tls import CipherSuite, SessionTicket


class H3Client(QuicConnectionProtocol):
    """A QUIC connection speaking HTTP/3, with one future per request stream."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.http = H3Connection(self._quic)
        self.waiters: dict[int, asyncio.Future[deque[H3Event]]] = {}
        self.events: dict[int, deque[H3Event]] = {}
        self.key_update = False

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.http.handle_event(event):
            if isinstance(h3_event, (HeadersReceived, DataReceived)):
                sid = h3_event.stream_id
                if sid in self.events:
                    self.events[sid].append(h3_event)
                    if h3_event.stream_ended:
                        self.waiters.pop(sid).set_result(self.events.pop(sid))
                if self.key_update and isinstance(h3_event, DataReceived):
                    self.key_update = False
                    print("requesting key update", file=sys.stderr)
                    self.request_key_update()

    async def get(self, url: str, byte_range: str | None) -> deque[H3Event]:
        """GET ``url`` and wait for the whole response."""
        parsed = urlparse(url)
        sid = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", parsed.netloc.encode()),
            (b":path", (parsed.path or "/").encode()),
            (b"user-agent", b"qh3-interop"),
        ]
        if byte_range:
            headers.append((b"range", byte_range.encode()))
        self.http.send_headers(sid, headers, end_stream=True)
        future: asyncio.Future[deque[H3Event]] = asyncio.get_running_loop().create_future()
        self.waiters[sid] = future
        self.events[sid] = deque()
        self.transmit()
        return await future


def save(events: deque[H3Event], url: str, out: str, want: int) -> None:
    """Write the body of ``events`` under the URL's basename; check the status."""
    status = None
    body = bytearray()
    for ev in events:
        if isinstance(ev, HeadersReceived):
            for k, v in ev.headers:
                if k == b":status":
                    status = int(v)
        elif isinstance(ev, DataReceived):
            body += ev.data
    name = os.path.basename(urlparse(url).path) or "index.html"
    with open(os.path.join(out, name), "wb") as f:
        f.write(body)
    if status != want:
        raise RuntimeError(f"{url}: status {status}, expected {want}")


async def fetch(
    args: argparse.Namespace, urls: list[str], ticket: list[SessionTicket], zero_rtt: bool
) -> None:
    """One connection: GET every URL in ``urls`` concurrently."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.load_verify_locations(cafile=args.ca)
    if args.chacha20:
        config.cipher_suites = [CipherSuite.CHACHA20_POLY1305_SHA256]
    if args.v2:
        # v2 from the first Initial: qh3 2.1.0 does not follow a compatible negotiation from
        # v1 (original_version=1): it stalls once the server's Initials switch to v2.
        config.supported_versions = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
    if args.qlog:
        config.quic_logger = QuicFileLogger(args.qlog)
    if args.keylog:
        config.secrets_log_file = open(args.keylog, "a")  # noqa: SIM115
    if ticket:
        config.session_ticket = ticket[-1]
    async with connect(
        args.host,
        args.port,
        configuration=config,
        create_protocol=H3Client,
        session_ticket_handler=ticket.append,
        wait_connected=not zero_rtt,
    ) as client:
        assert isinstance(client, H3Client)
        client.key_update = args.key_update
        # qh3 raises (rather than queues) past the peer's stream limit: keep 32 in flight
        limit = asyncio.Semaphore(32)

        async def one(url: str) -> deque[H3Event]:
            async with limit:
                return await client.get(url, args.range)

        results = await asyncio.gather(*(one(u) for u in urls))
        for url, events in zip(urls, results, strict=True):
            save(events, url, args.out, 206 if args.range else 200)
        if not zero_rtt and not ticket:
            # give a NewSessionTicket a moment to arrive (bounded: 1 s)
            for _ in range(100):
                if ticket:
                    break
                await asyncio.sleep(0.01)
        client.close()
        await client.wait_closed()


async def main(args: argparse.Namespace) -> None:
    """Run the connections the mode asks for."""
    tickets: list[SessionTicket] = []
    if args.mode == "each":
        for url in args.urls:
            await fetch(args, [url], [], False)
    elif args.mode == "resume":
        await fetch(args, args.urls[:1], tickets, False)
        if not tickets:
            raise RuntimeError("no session ticket received on the first connection")
        await fetch(args, args.urls[1:], tickets, args.zero_rtt)
    else:
        await fetch(args, args.urls, [], False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="CA certificate (PEM)")
    parser.add_argument("--out", required=True, help="download folder")
    parser.add_argument("--mode", choices=("one", "resume", "each"), default="one")
    parser.add_argument("--zero-rtt", action="store_true")
    parser.add_argument("--key-update", action="store_true")
    parser.add_argument("--chacha20", action="store_true")
    parser.add_argument("--v2", action="store_true")
    parser.add_argument("--range", help="Range header value, e.g. bytes=0-99")
    parser.add_argument("--qlog", help="qlog folder")
    parser.add_argument("--keylog", help="TLS key log file")
    parser.add_argument("--timeout", type=float, default=60.0, help="overall bound (s)")
    parser.add_argument("urls", nargs="+")
    ns = parser.parse_args()
    asyncio.run(asyncio.wait_for(main(ns), ns.timeout))
