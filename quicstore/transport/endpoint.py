"""The I/O boundary: UDP sockets, the event loop's clock and timers, driving aioquic.

:class:`QuicDriver` runs one sans-I/O QuicConnection on an asyncio loop: datagrams in,
QUIC events out to a handler, datagrams sent once per loop pass (coalesced), the
connection's timer armed with ``loop.call_at``. :class:`QuicServerEndpoint` demultiplexes one
UDP socket into connections (version negotiation, optional Retry); :func:`connect_quic`
opens a client connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from aioquic._buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicketFetcher, SessionTicketHandler

from . import compat
from .batched import BatchedDatagramTransport
from .compat import AppPacedQuicConnection
from .pmtud import BASE_SIZE
from .udp import datagram_size_for, set_dont_fragment

log = logging.getLogger("quicstore.transport")

quic_clock = time.monotonic
"""The clock (seconds) QUIC connections read: ``loop.call_at`` shares its base on asyncio's
loop and on uvloop, whose ``loop.time()`` is read once per loop pass and rounded to a whole
millisecond; a 1 ms ACK delay measured with it fell anywhere between 0 and 1 ms."""

SMALLEST_INITIAL = 1200
"""Bytes: a client Initial datagram is at least this large (RFC 9000, 14.1)."""


class ConnectionHandler(Protocol):
    """The application side of one QUIC connection."""

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        """Handle one QUIC event (called in order, on the loop)."""


def coalesce_stream_data(events: list[qe.QuicEvent]) -> list[qe.QuicEvent]:
    """``events`` with each stream's consecutive StreamDataReceived joined into one (data
    concatenated in order, ``end_stream`` of the last). A stream's data never moves past
    another kind of event (a reset, a termination...), and nothing follows an
    ``end_stream``; data of different streams may be reordered among themselves, which no
    stream can observe."""
    out: list[qe.QuicEvent] = []
    parts: dict[int, tuple[int, list[bytes]]] = {}  # stream -> (index in out, data pieces)
    for event in events:
        if type(event) is not qe.StreamDataReceived:
            _join_parts(out, parts)
            out.append(event)
            continue
        joined = parts.get(event.stream_id)
        if joined is None:
            if not event.end_stream:
                parts[event.stream_id] = (len(out), [event.data])
            out.append(event)
            continue
        index, pieces = joined
        pieces.append(event.data)
        if event.end_stream:
            out[index] = qe.StreamDataReceived(
                data=b"".join(pieces), end_stream=True, stream_id=event.stream_id
            )
            del parts[event.stream_id]
    _join_parts(out, parts)
    return out


def _join_parts(out: list[qe.QuicEvent], parts: dict[int, tuple[int, list[bytes]]]) -> None:
    for stream_id, (index, pieces) in parts.items():
        if len(pieces) > 1:
            out[index] = qe.StreamDataReceived(
                data=b"".join(pieces), end_stream=False, stream_id=stream_id
            )
    parts.clear()


TRANSMIT_AFTER_MESSAGES = 16
"""Requests or responses queued in one loop pass after which a send happens at once. A
batch of 32 requests arriving together would otherwise be answered in one send at the end
of the pass: the peer idles until then, and this side idles while the peer works through
the whole batch. Sending every 16 lets the two overlap. 16 responses of 4 KiB fill about
one 64 KB datagram; sending every 8 or 4 cost more CPU per request than the overlap gained."""


class QuicDriver:
    """Runs one QuicConnection on the running asyncio loop."""

    def __init__(
        self,
        quic: QuicConnection,
        send: Callable[[bytes, NetworkAddress], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        send_batch: Callable[[list[bytes], NetworkAddress], None] | None = None,
    ) -> None:
        """``send(datagram, address)`` puts one datagram on the wire;
        ``send_batch(datagrams, address)``, if given, several (in order) at once."""
        self.quic = quic
        self.loop = loop or asyncio.get_running_loop()
        self.handler: ConnectionHandler | None = None
        """Receives QUIC events; set by whoever accepts or opens the connection."""
        self.closed: asyncio.Future[None] = self.loop.create_future()
        """Done when the connection has terminated."""
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        """Done when the handshake completes; fails if the connection ends first."""
        self.on_cid_issued: Callable[[bytes], None] | None = None
        self.on_cid_retired: Callable[[bytes], None] | None = None
        self.on_terminated: Callable[[], None] | None = None
        self.on_receive: Callable[[], None] | None = None
        """Called after each received datagram has been processed (ACKs may have freed
        send-buffer space)."""
        self._send = send
        self._send_batch = send_batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._messages_queued = 0  # requests/responses queued since the last send
        self._stream_ended = False  # a stream's last data was handled since the last send
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.silence_timeout: float | None = None
        """Seconds without any datagram from the peer, while data waits for its ACK, after
        which the peer is declared gone (None: only QUIC's idle timeout applies). A peer that
        restarted or vanished is noticed in this time instead of the idle timeout."""
        self.last_receive = quic_clock()
        self.peer_host: object = None
        """The peer's IP address (servers)."""
        self.awaiting_peer: Callable[[], bool] | None = None
        """True while the application waits for the peer (e.g. requests outstanding): then
        silence counts even with nothing unacknowledged."""
        self._watchdog: asyncio.TimerHandle | None = None

    # -- input

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        """Feed one datagram from ``addr``; events are handled and a send is scheduled."""
        self.datagrams_received += 1
        self.last_receive = now = quic_clock()
        quic = self.quic
        if isinstance(quic, AppPacedQuicConnection):
            # The native receive path opens a lone datagram too (a small request or its
            # response usually arrives alone).
            quic.receive_datagram_batch([data], addr, now)
        else:
            quic.receive_datagram(data, addr, now=now)
        self._process_events()
        if self.on_receive is not None:
            self.on_receive()
        self._transmit_after_handlers()

    def datagram_batch_received(self, datagrams: list[bytes], addr: NetworkAddress) -> None:
        """Feed several datagrams from ``addr`` (one receive's worth), then handle their
        events once, with each stream's consecutive data joined into one event
        (:func:`coalesce_stream_data`): per-datagram work in the application becomes
        per-batch work. One send is scheduled."""
        self.datagrams_received += len(datagrams)
        self.last_receive = now = quic_clock()
        quic = self.quic
        if isinstance(quic, AppPacedQuicConnection):
            quic.receive_datagram_batch(datagrams, addr, now)
        else:
            for data in datagrams:
                quic.receive_datagram(data, addr, now=now)
        self._process_events(coalesce=len(datagrams) > 1)
        if self.on_receive is not None:
            self.on_receive()
        self._transmit_after_handlers()

    def _handle_timer(self) -> None:
        now = max(self._timer_at or 0.0, quic_clock())
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(now=now)
        self._process_events()
        self.transmit()

    def _process_events(self, coalesce: bool = False) -> None:
        if coalesce:
            pending: list[qe.QuicEvent] = []
            while (event := self.quic.next_event()) is not None:
                pending.append(event)
            for event in coalesce_stream_data(pending):
                self._handle_event(event)
            return
        while (event := self.quic.next_event()) is not None:
            self._handle_event(event)

    def _handle_event(self, event: qe.QuicEvent) -> None:
        if type(event) is qe.StreamDataReceived and event.end_stream:
            self._stream_ended = True
        if isinstance(event, qe.ConnectionIdIssued) and self.on_cid_issued:
            self.on_cid_issued(event.connection_id)
        elif isinstance(event, qe.ConnectionIdRetired) and self.on_cid_retired:
            self.on_cid_retired(event.connection_id)
        elif isinstance(event, qe.HandshakeCompleted) and not self.handshake.done():
            self.handshake.set_result(None)
        if self.handler is not None:
            self.handler.quic_event_received(event)
        if isinstance(event, qe.ConnectionTerminated):
            self._terminated(event)

    def _terminated(self, event: qe.ConnectionTerminated) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(
                    f"connection closed during handshake: {event.reason_phrase or event.error_code}"
                )
            )
            self.handshake.exception()  # mark retrieved: a caller may never await it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_terminated is not None:
            self.on_terminated()

    # -- output

    def transmit_soon(self, *, message: bool = False) -> None:
        """Send what the connection has to send, once, later in this loop pass.
        ``message``: a request or response (or a part of one) was just queued; the
        :data:`TRANSMIT_AFTER_MESSAGES`-th since the last send goes out now, with the
        others, instead of at the end of the pass."""
        if self._transmit_handle is None:
            self._transmit_handle = self.loop.call_soon(self.transmit)
        if message:
            self._messages_queued += 1
            if self._messages_queued >= TRANSMIT_AFTER_MESSAGES:
                self.transmit()

    def _transmit_after_handlers(self) -> None:
        """After a receive that ended a stream (a whole request or response arrived): send
        once the callbacks it set off have run, unless stream data is waiting (a sender
        whose window an ACK may have opened sends at once). A response wakes its waiting
        task two callbacks later (the call's future, then asyncio.wait's), and the next
        request that task writes then leaves in the same transmit as the ACK; a transmit
        right away would run aioquic's packet builder once for nothing and once more for
        the request (each ~0.1 ms of a 4 KiB GET here). Mid-stream receives send at once:
        their ACKs and window updates keep a transfer going."""
        if self._transmit_handle is not None:
            return
        if self._stream_ended and not compat.stream_data_waiting(self.quic):
            self._transmit_handle = self.loop.call_soon(self._transmit_next_pass)
        else:
            self._transmit_handle = self.loop.call_soon(self.transmit)

    def _transmit_next_pass(self) -> None:
        self._transmit_handle = self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        """Send pending datagrams now and re-arm the connection's timer."""
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        if self.closed.done():
            return
        self._stream_ended = False
        self._messages_queued = 0
        now = quic_clock()
        datagrams = self.quic.datagrams_to_send(now=now)
        if isinstance(self.quic, AppPacedQuicConnection) and self.quic.pmtu is not None:
            datagrams += self.quic.probe_datagrams(now)
        if self._send_batch is not None and len(datagrams) > 1:
            batch: list[bytes] = []
            batch_addr: NetworkAddress = datagrams[0][1]
            for data, addr in datagrams:
                if addr != batch_addr:
                    self._send_batch(batch, batch_addr)
                    batch, batch_addr = [], addr
                batch.append(data)
            self._send_batch(batch, batch_addr)
        else:
            for data, addr in datagrams:
                self._send(data, addr)
        self.datagrams_sent += len(datagrams)
        if isinstance(self.quic, AppPacedQuicConnection) and self.quic.settle_acks():
            # ACKs a receive left for after this send (compat.defer_acks): handled now,
            # before the timer is set from loss recovery; what they free may be sent.
            if self.on_receive is not None:
                self.on_receive()
            if compat.stream_data_waiting(self.quic):
                self.transmit_soon()
        self._process_events()
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self.loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at
        if self.silence_timeout is not None and self._watchdog is None and not self.closed.done():
            self._watchdog = self.loop.call_later(1.0, self._check_silence)

    def _check_silence(self) -> None:
        self._watchdog = None
        if self.closed.done() or self.silence_timeout is None:
            return
        silent = quic_clock() - self.last_receive
        waiting = compat.bytes_in_flight(self.quic) > 0 or (
            self.awaiting_peer is not None and self.awaiting_peer()
        )
        if silent > self.silence_timeout and waiting:
            log.info("peer silent for %.1fs while awaited: connection dropped", silent)
            self.abort(f"peer silent for {silent:.1f}s")
            return
        self._watchdog = self.loop.call_later(1.0, self._check_silence)

    def abort(self, reason: str) -> None:
        """End the connection at once without waiting for the peer (it is unreachable):
        the handler sees a ConnectionTerminated now, not after the idle timeout."""
        if self.closed.done():
            return
        self.quic.close(error_code=0x0, reason_phrase=reason)
        self.transmit()  # one CONNECTION_CLOSE, in case the peer is only slow, not gone
        event = qe.ConnectionTerminated(error_code=0x0, frame_type=None, reason_phrase=reason)
        if self.handler is not None:
            self.handler.quic_event_received(event)
        self._terminated(event)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE) and send it."""
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()


QuicFactory = Callable[..., QuicConnection]
"""Builds a QuicConnection from aioquic's keyword arguments."""


def default_quic_factory(**kwargs: Any) -> QuicConnection:
    """An AppPacedQuicConnection that paces nothing: aioquic's behaviour, plus the fixes of
    transport/compat.py (STREAM frames in datagrams above 16 KB)."""
    configuration = kwargs["configuration"]
    return AppPacedQuicConnection(
        stream_window=configuration.max_stream_data,
        connection_window=configuration.max_data,
        **kwargs,
    )


def paced_quic_factory(
    stream_window: int,
    connection_window: int,
    *,
    request_client_certificate: bool = False,
    max_streams_bidi: int | None = None,
) -> QuicFactory:
    """A factory of AppPacedQuicConnection with these receive windows (bytes)."""

    def build(**kwargs: object) -> QuicConnection:
        return AppPacedQuicConnection(
            stream_window=stream_window,
            connection_window=connection_window,
            request_client_certificate=request_client_certificate,
            max_streams_bidi=max_streams_bidi,
            **kwargs,
        )

    return build


class QuicServerEndpoint(asyncio.DatagramProtocol):
    """One UDP socket serving many QUIC connections."""

    def __init__(
        self,
        configuration: QuicConfiguration,
        on_connection: Callable[[QuicDriver], None],
        *,
        quic_factory: QuicFactory = default_quic_factory,
        retry: bool = False,
        session_ticket_fetcher: SessionTicketFetcher | None = None,
        session_ticket_handler: SessionTicketHandler | None = None,
        datagram_cap: int | None = None,
        silence_timeout: float | None = None,
        retry_threshold: float | None = None,
        retry_hold: float = 10.0,
        max_connections_per_address: int | None = None,
        pmtu_discovery: bool = True,
    ) -> None:
        """``on_connection(driver)`` is called for each new connection; it sets
        ``driver.handler``. ``retry`` makes every new client prove its address first;
        ``retry_threshold`` (new connections per second) turns that on by itself for
        ``retry_hold`` seconds when handshakes arrive faster (a flood of spoofed Initials
        then costs one small Retry each, no state). ``max_connections_per_address`` refuses
        further connections from one IP address with CONNECTION_REFUSED.
        Each connection sends the largest datagrams its route's MTU allows, at most
        ``datagram_cap`` bytes (None: no cap below 65000); with ``pmtu_discovery`` it
        starts at 1200 bytes and probes up to that (RFC 8899), so a path narrower than
        the route claims (a tunnel, a black hole for large packets) is found."""
        self.configuration = configuration
        self.on_connection = on_connection
        self.quic_factory = quic_factory
        self.retry = QuicRetryTokenHandler() if retry else None
        self.retry_always = retry
        self.accepting = True
        """False once shutting down: new connections are ignored."""
        self.drivers: set[QuicDriver] = set()
        self._by_cid: dict[bytes, QuicDriver] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._ticket_fetcher = session_ticket_fetcher
        self._ticket_handler = session_ticket_handler
        self.retries_sent = 0
        self.datagram_cap = datagram_cap
        self.pmtu_discovery = pmtu_discovery
        self.silence_timeout = silence_timeout
        self.retry_threshold = retry_threshold
        self.retry_hold = retry_hold
        self.max_connections_per_address = max_connections_per_address
        self._auto_retry_until = 0.0
        self._recent_handshakes: deque[float] = deque()
        self._per_address: dict[object, int] = {}
        self.refused = 0
        self._sizes: dict[object, int] = {}

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def _sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _send_batch(self, datagrams: list[bytes], addr: NetworkAddress) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if isinstance(transport, BatchedDatagramTransport):
            transport.send_batch(datagrams, addr)
        else:
            for data in datagrams:
                transport.sendto(data, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: NetworkAddress) -> None:
        """Several datagrams from one receive (see BatchedDatagramTransport): runs of them
        for one connection go to its driver together; anything else (a new connection,
        version negotiation) one by one through :meth:`datagram_received`."""
        run: list[bytes] = []
        run_driver: QuicDriver | None = None
        for data in datagrams:
            driver = self._driver_for(data)
            if driver is not run_driver:
                if run_driver is not None:
                    run_driver.datagram_batch_received(run, addr)
                run, run_driver = [], driver
            if driver is None:
                self.datagram_received(data, addr)
            else:
                run.append(data)
        if run_driver is not None:
            run_driver.datagram_batch_received(run, addr)

    def _driver_for(self, data: bytes) -> QuicDriver | None:
        """The driver of the connection a datagram's destination CID names, if any."""
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return None
        return self._by_cid.get(header.destination_cid)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return
        driver = self._by_cid.get(header.destination_cid)
        if driver is not None:
            driver.datagram_received(data, addr)
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self.configuration.supported_versions
        ):
            self._sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        if (
            not self.accepting
            or header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_INITIAL
        ):
            return
        original_dcid: bytes | None = header.destination_cid
        retry_scid: bytes | None = None
        host = addr[0]
        limit = self.max_connections_per_address
        if limit is not None and self._per_address.get(host, 0) >= limit:
            if header.version is not None:
                self._sendto(
                    compat.encode_initial_close(
                        header.version,
                        header.destination_cid,
                        header.source_cid,
                        QuicErrorCode.CONNECTION_REFUSED,
                    ),
                    addr,
                )
            self.refused += 1
            return
        retry_on = self._retry_active()
        if header.version is not None and self.retry is not None and header.token:
            # A client back from a Retry (even if the flood that caused it is over).
            try:
                original_dcid = self.retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=quic_clock(),
                )
            except ValueError:
                return
            retry_scid = header.destination_cid
        elif retry_on and header.version is not None:
            assert self.retry is not None
            source_cid = os.urandom(8)
            self._sendto(
                encode_quic_retry(
                    version=header.version,
                    source_cid=source_cid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=self.retry.create_token(
                        address=addr,
                        original_destination_connection_id=header.destination_cid,
                        retry_source_connection_id=source_cid,
                        now=quic_clock(),
                    ),
                ),
                addr,
            )
            self.retries_sent += 1
            return
        quic = self.quic_factory(
            configuration=self._configuration_for(addr),
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
            session_ticket_fetcher=self._ticket_fetcher,
            session_ticket_handler=self._ticket_handler,
        )
        if isinstance(quic, AppPacedQuicConnection):
            quic.start_pmtu_search(ceiling=self._route_size(addr), probe=self.pmtu_discovery)
        driver = QuicDriver(quic, self._sendto, send_batch=self._send_batch)
        driver.silence_timeout = self.silence_timeout
        driver.on_cid_issued = lambda cid: self._by_cid.__setitem__(cid, driver)
        driver.on_cid_retired = lambda cid: self._forget_cid(cid)
        driver.on_terminated = lambda: self._forget(driver)
        self._by_cid[header.destination_cid] = driver
        self._by_cid[quic.host_cid] = driver
        self.drivers.add(driver)
        self._per_address[host] = self._per_address.get(host, 0) + 1
        driver.peer_host = host
        self.on_connection(driver)
        driver.datagram_received(data, addr)

    def _route_size(self, addr: NetworkAddress) -> int:
        """The datagram size the route to ``addr`` carries (cached per host), capped."""
        host = addr[0]
        size = self._sizes.get(host)
        if size is None:
            family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
            size = datagram_size_for(family, addr, self.datagram_cap)
            if len(self._sizes) > 4096:
                self._sizes.clear()
            self._sizes[host] = size
        return size

    def _configuration_for(self, addr: NetworkAddress) -> QuicConfiguration:
        """The configuration with the datagram size the route to ``addr`` carries (with
        the size search on, the search starts from the base size instead)."""
        size = self._route_size(addr)
        # 1200 bytes until the handshake is confirmed and the peer's max_udp_payload_size
        # known; the connection then raises it (AppPacedQuicConnection.start_pmtu_search).
        size = min(size, BASE_SIZE)
        if size == self.configuration.max_datagram_size:
            return self.configuration
        return dataclasses.replace(self.configuration, max_datagram_size=size)

    def _forget_cid(self, cid: bytes) -> None:
        self._by_cid.pop(cid, None)

    def _retry_active(self) -> bool:
        """Retry for every new connection: configured, or switched on by a flood."""
        if self.retry_always:
            return True
        if self.retry_threshold is None:
            return False
        now = asyncio.get_running_loop().time()
        recent = self._recent_handshakes
        recent.append(now)
        while recent and recent[0] < now - 1.0:
            recent.popleft()
        if len(recent) > self.retry_threshold and now >= self._auto_retry_until:
            log.warning(
                "%d handshakes in the last second: Retry on for %.0fs", len(recent), self.retry_hold
            )
            self._auto_retry_until = now + self.retry_hold
        if now < self._auto_retry_until:
            if self.retry is None:
                self.retry = QuicRetryTokenHandler()
            return True
        return False

    def _forget(self, driver: QuicDriver) -> None:
        if driver in self.drivers:
            host = driver.peer_host
            count = self._per_address.get(host, 1) - 1
            if count > 0:
                self._per_address[host] = count
            else:
                self._per_address.pop(host, None)
        self.drivers.discard(driver)
        for cid in [c for c, d in self._by_cid.items() if d is driver]:
            del self._by_cid[cid]

    def close(self) -> None:
        """Stop listening (connections should be closed first)."""
        self.accepting = False
        if self._transport is not None:
            self._transport.close()


def bind_udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A UDP socket bound to (host, port), port 0 picking a free one, with large kernel
    buffers and don't-fragment set. ``reuse_port``: several sockets (one per worker process)
    may bind the same port; the kernel spreads peers over them by address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _grow_socket_buffers(sock)
        set_dont_fragment(sock)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def listen(
    host: str,
    port: int,
    endpoint: QuicServerEndpoint,
    *,
    sock: socket.socket | None = None,
    batched_io: bool = True,
) -> asyncio.DatagramTransport:
    """Serve ``endpoint`` on ``sock`` (already bound), or on a new socket bound to
    (host, port); port 0 picks a free one. ``batched_io``: quicstore's own transport
    (GSO/GRO where the kernel has them) instead of the event loop's."""
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = bind_udp(host, port)
    if batched_io:
        return BatchedDatagramTransport(loop, sock, endpoint)
    transport, _ = await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
    return transport


def _grow_socket_buffers(sock: socket.socket, size: int = 4 * 1024 * 1024) -> None:
    """Ask for larger kernel buffers (bytes) so that bursts are not dropped."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # limited by net.core.*mem_max
            sock.setsockopt(socket.SOL_SOCKET, option, size)


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.driver: QuicDriver | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if self.driver is not None:
            self.driver.datagram_received(data, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: NetworkAddress) -> None:
        """Several datagrams from one receive (see BatchedDatagramTransport)."""
        if self.driver is not None:
            self.driver.datagram_batch_received(datagrams, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors on the connected socket: nobody listens there (before the handshake
        this fails the connection attempt at once instead of waiting for a timeout)."""
        driver = self.driver
        if driver is None:
            return
        if not driver.handshake.done():
            driver.handshake.set_exception(ConnectionRefusedError(f"connection refused ({exc})"))
        elif isinstance(exc, ConnectionRefusedError):
            # The socket is connected to the gateway's address: only the path to it can
            # report this. The gateway process is gone; waiting for the idle timeout
            # would only delay the reconnect.
            driver.abort("gateway unreachable (port closed)")


async def connect_quic(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    make_handler: Callable[[QuicDriver], ConnectionHandler],
    *,
    quic_factory: QuicFactory = default_quic_factory,
    session_ticket_handler: SessionTicketHandler | None = None,
    wait_handshake: bool = True,
    datagram_cap: int | None = None,
    silence_timeout: float | None = None,
    batched_io: bool = True,
    pmtu_discovery: bool = True,
) -> tuple[QuicDriver, asyncio.DatagramTransport]:
    """Open a client connection to (host, port). Returns the driver (handshake done unless
    ``wait_handshake`` is false, for 0-RTT) and the UDP transport to close afterwards.
    Datagrams are as large as the route's MTU allows, at most ``datagram_cap`` bytes.
    ``batched_io``: quicstore's own UDP transport (GSO/GRO where the kernel has them).
    ``pmtu_discovery``: start at 1200 bytes and probe up to that size (RFC 8899)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _grow_socket_buffers(sock)
        set_dont_fragment(sock)
        sock.bind(("::", 0, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
        sock.connect(addr)
    except OSError:
        sock.close()
        raise
    route_size = datagram_size_for(family, addr, datagram_cap)
    size = min(route_size, BASE_SIZE)  # raised after the handshake (start_pmtu_search)
    if size != configuration.max_datagram_size:
        configuration = dataclasses.replace(configuration, max_datagram_size=size)
    transport: asyncio.DatagramTransport
    protocol = _ClientProtocol()
    if batched_io:
        transport = BatchedDatagramTransport(loop, sock, protocol)
    else:
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    quic = quic_factory(configuration=configuration, session_ticket_handler=session_ticket_handler)
    if isinstance(quic, AppPacedQuicConnection):
        quic.start_pmtu_search(ceiling=route_size, probe=pmtu_discovery)

    def send(data: bytes, _addr: NetworkAddress) -> None:
        if not transport.is_closing():
            transport.sendto(data)

    def send_batch(datagrams: list[bytes], _addr: NetworkAddress) -> None:
        if isinstance(transport, BatchedDatagramTransport):
            transport.send_batch(datagrams)
        else:
            for data in datagrams:
                send(data, _addr)

    driver = QuicDriver(quic, send, send_batch=send_batch)
    driver.silence_timeout = silence_timeout
    driver.on_terminated = transport.close
    protocol.driver = driver
    driver.handler = make_handler(driver)
    quic.connect(addr, now=quic_clock())
    driver.transmit()
    if wait_handshake:
        try:
            await driver.handshake
        except BaseException:
            transport.close()
            raise
    return driver, transport
