"""The gateway: serves a Store over quicstore/1 (spec/quicstore.md).

Each request stream becomes one task. A GET reads its range in block-aligned chunks, a few
reads in flight into buffers from a shared pool, and hands each chunk to QUIC only while the
stream's, the connection's and the gateway's send buffers are below their bounds, so a slow
client never makes the gateway hold more than those bounds (it holds none of the object
otherwise). A PUT streams into the store's atomic writer; its receive window follows what has
reached the disk. Every read is verified against the stored block checksums before it is
sent. Disk work runs on the store's threads; this module runs on the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import json
import logging
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.logger import QuicFileLogger
from aioquic.tls import SessionTicket
from cryptography import x509
from cryptography.x509 import verification

from ..auth import Authorizer
from ..proto import events as ev
from ..proto.codes import ALPN, ErrorCode, describe_error_code
from ..proto.connection import QuicstoreConnection
from ..proto.errors import RequestError
from ..proto.integrity import blocks_touched, crc32c, unpack_checksums
from ..proto.messages import (
    OP_DELETE,
    OP_GET,
    OP_HEAD,
    OP_LIST,
    OP_PUT,
    ListEntry,
    Listing,
    RequestHeader,
    ResponseHeader,
    encode_message,
)
from ..proto.semantics import check_conditions, list_page_limit, resolve_range, validate_request
from ..proto.state import MessageState
from ..store.base import ObjectInfo, ObjectReader, ObjectWriter, Store
from ..transport import compat, memory
from ..transport.endpoint import QuicDriver, QuicServerEndpoint, listen, paced_quic_factory
from .config import GatewayConfig

log = logging.getLogger("quicstore.gateway")
access_log = logging.getLogger("quicstore.access")

SMALL_RESPONSE = 64 * 1024
"""Responses up to this many bytes skip the connection's send-buffer bound, so a large GET
never delays small ones queued behind it (bounded: MAX_CONCURRENT_REQUESTS x this)."""
CHECKSUM_WINDOW = 4096
"""Block checksums fetched and sent per step of a large GET (16 KiB of CRCs)."""
WRITE_BATCH = 4 * 1024 * 1024
"""Most PUT bytes handed to the store in one write call."""
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
"""Upper bounds (seconds) of the request latency histogram's buckets (a last one, +Inf,
counts the rest): sub-millisecond HEADs to multi-minute GETs of large objects."""
METRIC_OPS = frozenset({OP_GET, OP_HEAD, OP_PUT, OP_DELETE, OP_LIST})
"""Operations counted under their own name; anything else (an unknown HTTP method) is
counted as ``other``, so a client cannot create new label values."""


@dataclass
class LatencyHistogram:
    """Request latencies of one (protocol, op): counts per bucket of :data:`LATENCY_BUCKETS`
    (not cumulative; the last entry counts those above the last bound) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum: float = 0.0
    """Seconds, over every observation."""

    def observe(self, seconds: float) -> None:
        """Count one request that took ``seconds``."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


@dataclass
class Metrics:
    """Counters of one gateway process (read by :mod:`quicstore.server.metrics`)."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests by ``op`` and outcome (``GET ok``, ``PUT QS_NOT_FOUND``...)."""
    bytes_sent: int = 0
    """Object bytes sent (GET bodies)."""
    bytes_received: int = 0
    """Object bytes received (PUT bodies)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failures by code name."""
    connections_total: int = 0
    connections_open: int = 0
    streams_open: int = 0
    integrity_failures: int = 0
    """Blocks read from disk that failed their stored CRC32C."""
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Finished requests by (protocol, op, outcome): ``("quicstore/1", "GET", "ok")``."""
    latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    """Request latency (request received to response handed to QUIC) by (protocol, op)."""

    def request_finished(self, protocol: str, op: str, outcome: str, seconds: float) -> None:
        """Count a finished request (called where it ends, next to the access log):
        ``protocol`` is the ALPN, ``seconds`` how long it took."""
        op = op if op in METRIC_OPS else "other"
        self.outcomes[protocol, op, outcome] += 1
        histogram = self.latency.get((protocol, op))
        if histogram is None:
            histogram = self.latency[protocol, op] = LatencyHistogram()
        histogram.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "requests": dict(self.requests),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "errors": dict(self.errors),
            "connections_total": self.connections_total,
            "connections_open": self.connections_open,
            "streams_open": self.streams_open,
            "integrity_failures": self.integrity_failures,
        }


def _nothing() -> None:
    """A buffer not from the pool needs nothing done when QUIC is finished with it."""


class BufferPool:
    """Reusable read buffers of one size (cache-line aligned, see
    :func:`~quicstore.transport.memory.aligned_buffer`); at most ``count`` exist (bytes
    bounded)."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self.count = count
        self._free: list[memoryview] = []
        self._allocated = 0
        self._waiters: deque[asyncio.Future[memoryview]] = deque()

    @property
    def in_use(self) -> int:
        """Buffers of the pool's count held by readers (not free)."""
        return self._allocated - len(self._free)

    async def acquire(self) -> memoryview:
        """A buffer of ``size`` bytes; waits if all are in use."""
        if self._free:
            return self._free.pop()
        if self._allocated < self.count:
            self._allocated += 1
            return memory.aligned_buffer(self.size)
        waiter: asyncio.Future[memoryview] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a buffer was granted but before this task resumed: the
            # buffer would be lost (and still counted), so pass it on.
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise

    def release(self, buffer: memoryview) -> None:
        """Give a buffer back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(buffer)
                return
        self._free.append(buffer)

    def shrink(self, keep: int) -> int:
        """Free all but ``keep`` idle buffers (the pool grows to its peak demand and would
        hold that memory for good); returns how many were freed. Buffers in use and
        waiting readers are untouched."""
        drop = max(0, len(self._free) - keep)
        if drop:
            del self._free[keep:]
            self._allocated -= drop
        return drop

    def hand_off(self, buffer: memoryview) -> Callable[[], None]:
        """Take ``buffer`` out of the pool's count (it now belongs to a send buffer, bounded
        by the send-buffer limits) and make room for another; returns the function that
        offers it back once sent, kept if the pool is short of its count."""
        self._allocated -= 1
        while self._waiters and self._allocated < self.count:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._allocated += 1
                waiter.set_result(memory.aligned_buffer(self.size))

        def give_back() -> None:
            if self._allocated < self.count:
                self._allocated += 1
                self.release(buffer)

        return give_back


class _Upload:
    """What a PUT stream has received and not yet written (fed by events, drained by the
    request task)."""

    def __init__(self) -> None:
        self.items: deque[tuple[str, Any]] = deque()
        self.ready = asyncio.Event()
        self.trailer_sha: bytes | None = None

    def put(self, kind: str, value: Any = None) -> None:
        self.items.append((kind, value))
        self.ready.set()


@dataclass
class _Request:
    stream_id: int
    header: RequestHeader
    started: float
    upload: _Upload | None = None
    task: asyncio.Task[None] | None = None
    bytes_out: int = 0
    bytes_in: int = 0
    responded: bool = False
    sent: bool = False
    """The whole response went out in a transmit of its own (nothing left to flush)."""


class TicketStore:
    """TLS session tickets issued by this gateway (resumption and 0-RTT), in memory, the
    oldest dropped beyond ``capacity``. A ticket is used once (RFC 8446, 8.1)."""

    def __init__(self, capacity: int = 10000) -> None:
        self.capacity = capacity
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def pop_ticket(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class Gateway:
    """Serves one Store on one UDP port."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        authorizer: Authorizer,
        quic_configuration: QuicConfiguration,
    ) -> None:
        self.config = config
        self.store = store
        self.authorizer = authorizer
        self.quic_configuration = quic_configuration
        self.metrics = Metrics()
        chunk = config.read_chunk
        self.pool = BufferPool(chunk, config.read_buffers)
        self.sessions: set[StreamingSession] = set()
        self.endpoint: QuicServerEndpoint | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._global_waiters: set[StreamingSession] = set()
        self._trim_handle: asyncio.TimerHandle | None = None
        self._tickets = TicketStore()
        self._waiter_timer: asyncio.TimerHandle | None = None
        self._total = 0
        self._total_at = -1.0
        self.client_cas: list[x509.Certificate] = (
            x509.load_pem_x509_certificates(config.client_ca.read_bytes())
            if config.client_ca is not None
            else []
        )

    def client_certificate_ok(self, driver: QuicDriver) -> bool:
        """Mutual TLS: does the client's certificate chain to a configured CA?"""
        chain = compat.peer_certificate_chain(driver.quic)
        if not chain:
            return False
        try:
            verifier = (
                verification.PolicyBuilder()
                .store(verification.Store(self.client_cas))
                .time(datetime.datetime.now(datetime.UTC))
                .build_client_verifier()
            )
            verifier.verify(chain[0], chain[1:])
        except (verification.VerificationError, ValueError) as exc:
            log.info("client certificate refused: %s", exc)
            return False
        return True

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Listen (on ``sock`` if given, already bound); returns the bound (host, port)."""
        cfg = self.config
        self.endpoint = QuicServerEndpoint(
            self.quic_configuration,
            self._on_connection,
            session_ticket_fetcher=self._tickets.pop_ticket,
            session_ticket_handler=self._tickets.add,
            quic_factory=paced_quic_factory(
                cfg.stream_window,
                cfg.connection_window,
                request_client_certificate=cfg.client_ca is not None,
                max_streams_bidi=cfg.settings.max_concurrent_requests,
            ),
            retry=cfg.retry,
            retry_threshold=cfg.retry_threshold,
            max_connections_per_address=cfg.max_connections_per_address,
            datagram_cap=cfg.max_datagram_size,
            silence_timeout=cfg.silence_timeout,
            pmtu_discovery=cfg.pmtu_discovery,
        )
        self._transport = await listen(
            cfg.host, cfg.port, self.endpoint, sock=sock, batched_io=cfg.batched_io
        )
        return self.endpoint.address

    def _on_connection(self, driver: QuicDriver) -> None:
        driver.handler = _Dispatcher(self, driver)
        self.metrics.connections_total += 1
        self.metrics.connections_open += 1

    # -- shared send-buffer bound

    def total_send_buffered(self) -> int:
        """Bytes queued in QUIC send buffers on all connections, recounted at most every
        10 ms (a count walks every connection's streams)."""
        now = asyncio.get_running_loop().time()
        if now - self._total_at >= 0.01:
            self._total = sum(compat.unacknowledged_bytes(s.quic) for s in self.sessions)
            self._total_at = now
        return self._total

    def add_global_waiter(self, session: StreamingSession) -> None:
        """``session`` waits for gateway-wide send-buffer space. Space frees as ACKs arrive
        on any connection, or as connections end; a connection held by a silent client
        sees neither, so waiters are also re-woken every 50 ms while there are any."""
        self._global_waiters.add(session)
        if self._waiter_timer is None:
            self._waiter_timer = asyncio.get_running_loop().call_later(0.05, self._rewake)

    @property
    def send_buffer_waiters(self) -> int:
        """Connections whose GETs wait for gateway-wide send-buffer space."""
        return len(self._global_waiters)

    def _rewake(self) -> None:
        self._waiter_timer = None
        if self._global_waiters:
            self._total_at = -1.0  # recount now
            self.wake_global_waiters()
            self._waiter_timer = asyncio.get_running_loop().call_later(0.05, self._rewake)

    def wake_global_waiters(self) -> None:
        for session in list(self._global_waiters):
            session.writable.set()

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Graceful stop (spec Section 10.3): refuse new connections, GOAWAY, let requests
        finish for up to ``drain_timeout`` seconds, then close every connection."""
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        if self.endpoint is not None:
            self.endpoint.accepting = False
        for session in list(self.sessions):
            session.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = [t for s in self.sessions for t in s.tasks()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        # Responses handed to QUIC must reach the client before the connection closes.
        await asyncio.gather(*(s.drained(deadline) for s in list(self.sessions)))
        for session in list(self.sessions):
            session.close(ErrorCode.QS_NO_ERROR, "gateway shutting down")
        if self.endpoint is not None:
            drivers = list(self.endpoint.drivers)
            for driver in drivers:
                driver.close(ErrorCode.QS_NO_ERROR, "gateway shutting down")
            # Give the CONNECTION_CLOSE frames a moment, then end the draining periods now
            # (that also writes the qlog traces).
            if drivers:
                await asyncio.wait([d.closed for d in drivers], timeout=0.2)
            for driver in drivers:
                if not driver.closed.done():
                    compat.finish_close(driver.quic)
                    driver.transmit()
        if self._transport is not None:
            self._transport.close()

    def reload_secrets(self, authorizer: Authorizer) -> None:
        """Use new token secrets from now on (key rotation without a restart)."""
        self.authorizer = authorizer

    def session_ended(self, session: StreamingSession) -> None:
        self.sessions.discard(session)
        self._global_waiters.discard(session)
        self.metrics.connections_open -= 1
        # Its queued bytes are gone: GETs held by the gateway-wide bound may go on.
        self.wake_global_waiters()
        self._schedule_trim()

    def _schedule_trim(self) -> None:
        """Return freed memory to the OS a little after connections end (glibc keeps freed
        heap otherwise: a storm of clients would leave the RSS at its peak)."""
        if self._trim_handle is None:
            loop = asyncio.get_running_loop()
            # At most every 5 s: a collection of a large heap takes milliseconds.
            self._trim_handle = loop.call_later(5.0, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        # Idle read buffers beyond one GET's read-ahead go back too: after a storm of
        # clients the pool would otherwise stay at its peak (up to read_buffers x
        # read_chunk bytes) for good. A busier moment allocates them again.
        self.pool.shrink(self.config.reads_in_flight)
        memory.trim()


class _Dispatcher:
    """Picks the protocol by ALPN once the handshake has negotiated it (with mutual TLS:
    once the handshake has completed and the client's certificate is verified)."""

    def __init__(self, gateway: Gateway, driver: QuicDriver) -> None:
        self.gateway = gateway
        self.driver = driver
        self.protocol: StreamingSession | None = None
        self._counted = True
        self._alpn: str | None = None

    def _start_protocol(self) -> None:
        if self._alpn == ALPN:
            self.protocol = QuicstoreSession(self.gateway, self.driver)
        elif self._alpn in ("h3", "hq-interop"):
            from .h3 import H3Session

            self.protocol = H3Session(self.gateway, self.driver, self._alpn)
        if self.protocol is not None:
            self.gateway.sessions.add(self.protocol)

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if self.protocol is None and isinstance(event, qe.ProtocolNegotiated):
            self._alpn = event.alpn_protocol
            if not self.gateway.client_cas:
                self._start_protocol()
            return
        if (
            self.protocol is None
            and isinstance(event, qe.HandshakeCompleted)
            and self.gateway.client_cas
        ):
            if not self.gateway.client_certificate_ok(self.driver):
                self.gateway.metrics.errors["client certificate"] += 1
                self.driver.close(ErrorCode.QS_UNAUTHENTICATED, "client certificate required")
                return
            self._start_protocol()
        if self.protocol is not None:
            self.protocol.quic_event_received(event)
        elif isinstance(event, qe.ConnectionTerminated) and self._counted:
            self._counted = False
            self.gateway.metrics.connections_open -= 1


class _RunsInTask(Protocol):
    """A request of a session, handled by its own task once one is started."""

    @property
    def task(self) -> asyncio.Task[None] | None: ...


class StreamingSession:
    """What every protocol session of the gateway shares: the send-buffer bounds that a
    streaming response waits on, the wake-ups that ACKs bring, and the requests' tasks that
    end with the connection."""

    gateway: Gateway
    config: GatewayConfig
    driver: QuicDriver
    quic: QuicConnection
    requests: Mapping[int, _RunsInTask]
    """The requests in progress, by stream ID."""
    _ended: bool

    def _init_streaming(self, gateway: Gateway, driver: QuicDriver) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.driver = driver
        self.quic = driver.quic
        self.writable = asyncio.Event()
        self.waiters = 0
        self.cached_buffered = 0
        self.active_gets: set[int] = set()
        self.handshake_done = asyncio.Event()
        driver.on_receive = self.after_receive
        # A client holding response bytes it does not acknowledge or give credit for, and
        # sending nothing, is gone or hostile: the silence watchdog frees what it holds.
        driver.awaiting_peer = lambda: compat.unacknowledged_bytes(self.quic) > 0

    @property
    def closing(self) -> bool:
        """True once the connection is closing (sends would be dropped)."""
        return compat.is_closing(self.quic)

    def send_body(
        self, stream_id: int, data: memoryview, release: Callable[[], None] | None = None
    ) -> bool:
        """Send response bytes; False if the stream is gone. With ``release``, ``data`` is
        handed over (unchanged until ``release`` is called, which happens only if this
        returns True) and may be sent without a copy."""
        raise NotImplementedError

    def send_block_checksums(self, stream_id: int, first: int, values: tuple[int, ...]) -> None:
        """Send block checksums ahead of the data they cover (where the protocol can)."""

    def tasks(self) -> list[asyncio.Task[None]]:
        """Request tasks still running."""
        return [r.task for r in self.requests.values() if r.task is not None and not r.task.done()]

    def _end(self) -> None:
        """Once, when the connection ends: cancel every request's task, stop the session's
        timers (:meth:`_stop_timers`) and tell the gateway the session ended."""
        if self._ended:
            return
        self._ended = True
        for req in list(self.requests.values()):
            if req.task is not None:
                req.task.cancel()
        self._stop_timers()
        self.gateway.session_ended(self)

    def _stop_timers(self) -> None:
        """Cancel what the protocol has scheduled for the connection (nothing by default)."""

    def go_away(self) -> None:
        """Start a graceful shutdown of this connection."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        """Close the connection."""
        raise NotImplementedError

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        """Handle one QUIC event."""
        raise NotImplementedError

    def after_receive(self) -> None:
        """Called by the driver after each datagram: ACKs may have drained send buffers."""
        if self.waiters:
            self.writable.set()
        if self.gateway._global_waiters:
            self.gateway.wake_global_waiters()

    async def wait_writable(self, stream_id: int, small: bool) -> None:
        """Wait until QUIC's send buffers are below their bounds (stream, connection,
        gateway). ``small`` responses only respect the stream's bound."""
        cfg = self.config
        gateway = self.gateway
        while True:
            stream_buffered = compat.send_buffered(self.quic, stream_id)
            # Streams of one connection share its bound: with many large GETs each may queue
            # only its share (but at least two chunks, to keep the sender busy).
            share = max(
                2 * cfg.read_chunk,
                min(
                    cfg.stream_send_buffer,
                    cfg.connection_send_buffer // max(1, len(self.active_gets)),
                ),
            )
            if stream_buffered < share:
                if small:
                    return
                # Everything queued on the connection counts, including responses whose
                # task has finished but whose bytes are not acknowledged yet.
                self.cached_buffered = compat.unacknowledged_bytes(self.quic)
                if self.cached_buffered < cfg.connection_send_buffer:
                    if gateway.total_send_buffered() < cfg.gateway_send_buffer:
                        gateway._global_waiters.discard(self)
                        return
                    gateway.add_global_waiter(self)
            if self.closing:
                raise asyncio.CancelledError
            self.waiters += 1
            self.writable.clear()
            try:
                await self.writable.wait()
            finally:
                self.waiters -= 1

    async def stream_drained(self, stream_id: int, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until a stream's sent bytes are acknowledged."""
        deadline = asyncio.get_running_loop().time() + timeout
        await self._wait_until_acknowledged(
            lambda: compat.send_buffered(self.quic, stream_id), deadline
        )

    async def drained(self, deadline: float) -> None:
        """Wait (until ``deadline``, loop time) for every byte sent to be acknowledged."""
        await self._wait_until_acknowledged(
            lambda: compat.unacknowledged_bytes(self.quic), deadline
        )

    async def _wait_until_acknowledged(
        self, unacknowledged: Callable[[], int], deadline: float
    ) -> None:
        """Wait while ``unacknowledged()`` (bytes sent, not yet acknowledged) is not 0 and
        the connection is open, until ``deadline`` (loop time): woken each time the
        connection may have become writable."""
        loop = asyncio.get_running_loop()
        while unacknowledged() and not self.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.waiters += 1
            self.writable.clear()
            try:
                await asyncio.wait_for(self.writable.wait(), remaining)
            except TimeoutError:
                return
            finally:
                self.waiters -= 1


class QuicstoreSession(StreamingSession):
    """One quicstore/1 connection on the gateway."""

    def __init__(self, gateway: Gateway, driver: QuicDriver) -> None:
        self._init_streaming(gateway, driver)
        flow = self.quic if isinstance(self.quic, compat.AppPacedQuicConnection) else None
        self.qs = QuicstoreConnection(
            self.quic, is_client=False, settings=self.config.settings, flow=flow
        )
        self.requests: dict[int, _Request] = {}
        self._ended = False
        self._header_deadlines: dict[int, float] = {}
        self._header_timer: asyncio.TimerHandle | None = None
        driver.transmit_soon()

    def send_body(
        self, stream_id: int, data: memoryview, release: Callable[[], None] | None = None
    ) -> bool:
        return self.qs.send_data(stream_id, data, release=release)

    def send_block_checksums(self, stream_id: int, first: int, values: tuple[int, ...]) -> None:
        self.qs.send_checksums(stream_id, first, values)

    # -- events

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        for e in self.qs.handle_event(event):
            self._dispatch(e)
        if isinstance(event, qe.StreamDataReceived) and not event.stream_id & 3:
            state = self.qs.request_state(event.stream_id)
            if state is not None and state[0] is MessageState.REQUEST_START:
                self._arm_header_timer()

    def _dispatch(self, e: ev.Event) -> None:
        if isinstance(e, ev.RequestReceived):
            self._header_deadlines.pop(e.stream_id, None)
            self._start(e.stream_id, e.header)
            return
        req = self.requests.get(getattr(e, "stream_id", -1))
        if isinstance(e, ev.DataReceived):
            if req is not None and req.upload is not None:
                req.upload.put("data", e.data)
                req.bytes_in += len(e.data)
                self.gateway.metrics.bytes_received += len(e.data)
            else:
                self.qs.data_consumed(e.stream_id, len(e.data))
        elif isinstance(e, ev.ChecksumsReceived):
            if req is not None and req.upload is not None:
                req.upload.put("checksums", (e.first_block, e.checksums))
        elif isinstance(e, ev.TrailerReceived):
            if req is not None and req.upload is not None:
                req.upload.trailer_sha = e.trailer.sha256
        elif isinstance(e, ev.StreamEnded):
            if req is not None and req.upload is not None:
                req.upload.put("end")
        elif isinstance(e, ev.StreamReset | ev.StopSendingReceived | ev.StreamAbandoned):
            if isinstance(e, ev.StreamAbandoned):
                self.gateway.metrics.errors[f"stream {describe_error_code(e.code)}"] += 1
            self._header_deadlines.pop(e.stream_id, None)
            if req is not None and req.task is not None:
                req.task.cancel()
        elif isinstance(e, ev.HandshakeCompleted):
            self.handshake_done.set()
        elif isinstance(e, ev.ConnectionTerminated):
            if not e.by_peer:
                self.gateway.metrics.errors[f"connection {describe_error_code(e.code)}"] += 1
            self._end()

    def _stop_timers(self) -> None:
        """Cancel the header-timeout timer."""
        if self._header_timer is not None:
            self._header_timer.cancel()

    # -- slow-loris defence (a REQUEST frame that never completes)

    def _arm_header_timer(self) -> None:
        loop = self.driver.loop
        now = loop.time()
        for sid in self.qs.streams_awaiting_request():
            self._header_deadlines.setdefault(sid, now + self.config.header_timeout)
        if self._header_timer is None and self._header_deadlines:
            when = min(self._header_deadlines.values())
            self._header_timer = loop.call_at(when, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        now = self.driver.loop.time()
        waiting = set(self.qs.streams_awaiting_request())
        for sid, deadline in list(self._header_deadlines.items()):
            if sid not in waiting:
                del self._header_deadlines[sid]
            elif deadline <= now:
                del self._header_deadlines[sid]
                self.qs.cancel_request(sid, ErrorCode.QS_REQUEST_TIMEOUT)
                self.gateway.metrics.errors["QS_REQUEST_TIMEOUT"] += 1
                log.info(
                    "request header on stream %d not complete in %.1fs: reset",
                    sid,
                    self.config.header_timeout,
                )
        self.driver.transmit_soon()
        if self._header_deadlines:
            self._header_timer = self.driver.loop.call_at(
                min(self._header_deadlines.values()), self._header_timeout
            )

    # -- requests

    def _start(self, stream_id: int, header: RequestHeader) -> None:
        req = _Request(stream_id, header, time.perf_counter())
        if header.op == OP_PUT:
            req.upload = _Upload()
        self.requests[stream_id] = req
        self.gateway.metrics.streams_open += 1
        req.task = asyncio.get_running_loop().create_task(self._run(req))

    async def _run(self, req: _Request) -> None:
        outcome = "ok"
        try:
            await self._serve(req)
        except RequestError as exc:
            outcome = describe_error_code(exc.code)
            self._fail(req, exc.code, exc.reason)
        except asyncio.CancelledError:
            outcome = "cancelled"
            self.qs.cancel_request(req.stream_id, ErrorCode.QS_REQUEST_CANCELLED)
        except Exception:
            outcome = "QS_INTERNAL_ERROR"
            log.exception("request on stream %d failed", req.stream_id)
            self._fail(req, ErrorCode.QS_INTERNAL_ERROR, "internal error")
        finally:
            self.requests.pop(req.stream_id, None)
            self.active_gets.discard(req.stream_id)
            self.gateway.metrics.streams_open -= 1
            self.gateway.metrics.requests[f"{req.header.op[:8]} {outcome}"] += 1
            self.gateway.metrics.request_finished(
                ALPN, req.header.op, outcome, time.perf_counter() - req.started
            )
            if outcome != "ok":
                self.gateway.metrics.errors[outcome] += 1
            if not req.sent:
                self.driver.transmit_soon()
            self._log(req, outcome)

    def _fail(self, req: _Request, code: int, reason: str) -> None:
        if req.responded:
            # Headers already went out: the only way to signal is to reset the stream.
            self.qs.cancel_request(req.stream_id, code)
        else:
            self.qs.send_error(req.stream_id, code, reason)
            self.qs.cancel_request(req.stream_id, ErrorCode.QS_NO_ERROR)  # stop an upload

    def _log(self, req: _Request, outcome: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        h = req.header
        access_log.info(
            json.dumps(
                {
                    "op": h.op[:8],
                    "bucket": h.bucket[:64],
                    "key": (h.key or h.prefix or "")[:256],
                    "stream": req.stream_id,
                    "bytes_out": req.bytes_out,
                    "bytes_in": req.bytes_in,
                    "ms": round((time.perf_counter() - req.started) * 1000, 3),
                    "outcome": outcome,
                }
            )
        )

    async def _serve(self, req: _Request) -> None:
        h = req.header
        validate_request(h, self.config.settings)
        scope = (h.prefix or "") if h.op == OP_LIST else (h.key or "")
        self.gateway.authorizer.check(h.token, h.op, h.bucket, scope, time.time())
        handler: dict[str, Callable[[_Request], Awaitable[None]]] = {
            OP_GET: self._get,
            OP_HEAD: self._head,
            OP_PUT: self._put,
            OP_DELETE: self._delete,
            OP_LIST: self._list,
        }
        await handler[h.op](req)

    def _response_header(self, info: ObjectInfo, **extra: int) -> ResponseHeader:
        return ResponseHeader(
            size=info.size,
            etag=info.etag,
            mtime_ns=info.mtime_ns,
            block_size=info.block_size,
            sha256=info.sha256,
            content_type=info.content_type,
            meta=info.meta or None,
            **extra,
        )

    async def _head(self, req: _Request) -> None:
        h = req.header
        assert h.key is not None
        if not h.checksums:
            info = await self.gateway.store.stat(h.bucket, h.key)
            check_conditions(h, info.etag)
            self.qs.send_response(req.stream_id, self._response_header(info), end_stream=True)
            return
        reader = await self.gateway.store.open(h.bucket, h.key)
        try:
            check_conditions(h, reader.info.etag)
            self.qs.send_response(req.stream_id, self._response_header(reader.info))
            req.responded = True
            blocks = -(-reader.info.size // reader.info.block_size)
            for first in range(0, blocks, CHECKSUM_WINDOW):
                count = min(CHECKSUM_WINDOW, blocks - first)
                packed = await reader.read_checksums(first, count)
                self.qs.send_checksums(req.stream_id, first, unpack_checksums(packed))
                self.driver.transmit_soon()
            self.qs.end_stream(req.stream_id)
        finally:
            await reader.close()

    async def _get(self, req: _Request) -> None:
        h = req.header
        assert h.key is not None
        reader = await self.gateway.store.open(h.bucket, h.key)
        try:
            info = reader.info
            check_conditions(h, info.etag)
            rng = resolve_range(h, info.size)
            header = self._response_header(info, offset=rng.offset, length=rng.length)
            if 0 < rng.length <= SMALL_RESPONSE and await self._get_whole(
                req, reader, header, rng.offset, rng.length
            ):
                return
            self.qs.send_response(req.stream_id, header)
            req.responded = True
            if rng.length == 0:
                self.qs.end_stream(req.stream_id)
                return
            self.active_gets.add(req.stream_id)
            await _GetStreamer(self, req, reader, rng.offset, rng.length).run()
            self.qs.end_stream(req.stream_id)
        finally:
            await reader.close()

    async def _get_whole(
        self, req: _Request, reader: ObjectReader, header: ResponseHeader, offset: int, length: int
    ) -> bool:
        """A small GET answered in one write: the blocks covering the range and their
        checksums read, every block verified, then the response, checksums, body and FIN
        handed to QUIC together. False (nothing sent) if a block fails its check: the
        streaming path then sends the good blocks before the error, as for a large GET."""
        bs = reader.info.block_size
        first_block = offset // bs
        end_block = -(-(offset + length) // bs)
        sums = await _read_checksums(reader, first_block, end_block - first_block)
        start = first_block * bs
        blocks = memoryview(bytearray(min(end_block * bs, reader.info.size) - start))
        await _read_exactly(reader, start, blocks)
        if self.config.verify_reads:
            for index, value in enumerate(sums):
                if crc32c(blocks[index * bs : (index + 1) * bs]) != value:
                    return False
        await self.wait_writable(req.stream_id, True)
        req.responded = True
        body = blocks[offset - start : offset - start + length]
        if self.qs.send_whole_response(req.stream_id, header, first_block, sums, body):
            req.bytes_out += length
            self.gateway.metrics.bytes_sent += length
            if len(self.requests) == 1:
                # The only request in progress: its answer leaves now, ahead of the
                # bookkeeping after it. With others in progress it goes with theirs.
                self.driver.transmit()
                req.sent = True
            else:
                self.driver.transmit_soon(message=True)
        return True

    async def _put(self, req: _Request) -> None:
        h = req.header
        assert h.key is not None and req.upload is not None
        store = self.gateway.store
        # Fail early on conditions (spec Section 7.4 step 1); re-checked at commit.
        if h.if_match is not None or h.if_none_match is not None:
            try:
                current: str | None = (await store.stat(h.bucket, h.key)).etag
            except RequestError as exc:
                if exc.code != ErrorCode.QS_NOT_FOUND:
                    raise
                current = None
            check_conditions(h, current)
        if not self.handshake_done.is_set():
            await self.handshake_done.wait()  # Section 10.4: no PUT applied from 0-RTT
        writer = await store.create(
            h.bucket,
            h.key,
            block_size=self.config.settings.block_size,
            content_type=h.content_type,
            meta=h.meta,
        )
        try:
            info = await self._receive_body(req, writer)
        except BaseException:
            await writer.abort()
            raise
        self.qs.send_response(req.stream_id, self._response_header(info), end_stream=True)

    async def _receive_body(self, req: _Request, writer: ObjectWriter) -> ObjectInfo:
        """Write the PUT body as it arrives; give QUIC credit back as it reaches the store."""
        upload = req.upload
        assert upload is not None
        h = req.header
        limit = self.config.settings.max_object_size
        while True:
            while not upload.items:
                upload.ready.clear()
                await upload.ready.wait()
            kind, value = upload.items.popleft()
            if kind == "checksums":
                await writer.expect_checksums(*value)
            elif kind == "end":
                return await writer.commit(
                    sha256=upload.trailer_sha or h.sha256,
                    content_length=h.content_length,
                    condition=lambda etag: check_conditions(h, etag),
                )
            else:
                batch = [value]
                size = len(value)
                while upload.items and upload.items[0][0] == "data" and size < WRITE_BATCH:
                    more = upload.items.popleft()[1]
                    batch.append(more)
                    size += len(more)
                if limit and writer.size + size > limit:
                    raise RequestError(
                        ErrorCode.QS_OBJECT_TOO_LARGE, f"body exceeds MAX_OBJECT_SIZE {limit}"
                    )
                if h.content_length is not None and writer.size + size > h.content_length:
                    raise RequestError(
                        ErrorCode.QS_INTEGRITY_ERROR, "body longer than content_length"
                    )
                await writer.write(batch)
                self.qs.data_consumed(req.stream_id, size)
                self.driver.transmit_soon()

    async def _delete(self, req: _Request) -> None:
        h = req.header
        assert h.key is not None
        if not self.handshake_done.is_set():
            await self.handshake_done.wait()  # Section 10.4
        info = await self.gateway.store.delete(
            h.bucket, h.key, lambda etag: check_conditions(h, etag)
        )
        self.qs.send_response(req.stream_id, ResponseHeader(etag=info.etag), end_stream=True)

    async def _list(self, req: _Request) -> None:
        h = req.header
        limit = list_page_limit(h, self.config.settings)
        budget = self.qs.peer_settings.max_frame_size - 512
        while True:
            page = await self.gateway.store.list(
                h.bucket,
                prefix=h.prefix or "",
                delimiter=h.delimiter,
                continuation=h.continuation,
                limit=limit,
            )
            listing = Listing(
                entries=[
                    ListEntry(key=e.key, size=e.size, etag=e.etag, mtime_ns=e.mtime_ns)
                    for e in page.entries
                ],
                prefixes=page.prefixes,
                next=page.next,
            )
            if len(encode_message(listing)) <= budget or limit == 1:
                break
            limit = max(1, limit // 2)  # Section 4.9: fewer entries to fit the frame
        self.qs.send_listing(req.stream_id, listing)

    # -- shutdown

    def go_away(self) -> None:
        if not self.qs.closed:
            self.qs.send_goaway()
            self.driver.transmit_soon()

    def close(self, code: int, reason: str) -> None:
        if not self.qs.closed:
            self.qs.close(code, reason)
            self.driver.transmit()
        self._end()


async def _read_checksums(reader: ObjectReader, first_block: int, count: int) -> tuple[int, ...]:
    """The stored checksums of ``count`` blocks from ``first_block``; an internal error if
    the store has fewer."""
    values = unpack_checksums(await reader.read_checksums(first_block, count))
    if len(values) != count:
        raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "stored checksums are short")
    return values


async def _read_exactly(reader: ObjectReader, offset: int, view: memoryview) -> None:
    """Fill ``view`` with the object's bytes from ``offset``; an internal error if the file
    ends first."""
    got = 0
    while got < len(view):
        n = await reader.read_into(offset + got, view[got:])
        if n <= 0:
            raise RequestError(ErrorCode.QS_INTERNAL_ERROR, "object file is short")
        got += n


class _GetStreamer:
    """Streams one range of an open object: aligned reads, several in flight, sent in
    order, each verified against its block checksums, within the send-buffer bounds."""

    def __init__(
        self,
        session: StreamingSession,
        req: _Request,
        reader: ObjectReader,
        offset: int,
        length: int,
    ) -> None:
        self.session = session
        self.req = req
        self.reader = reader
        self.offset = offset
        self.end = offset + length
        info = reader.info
        self.block_size = info.block_size
        pool_size = session.gateway.pool.size
        self.chunk = max(self.block_size, pool_size - pool_size % self.block_size)
        self.small = length <= SMALL_RESPONSE
        self.sums: dict[int, int] = {}
        self.sent_blocks = 0  # checksums sent for blocks below this index
        self.first_block = offset // self.block_size
        self.sent_blocks = self.first_block

    async def _ensure_checksums(self, upto_block: int) -> None:
        """Send (and remember for verification) checksums of blocks before ``upto_block``."""
        last_block = -(-self.end // self.block_size)
        while self.sent_blocks < upto_block:
            count = min(CHECKSUM_WINDOW, last_block - self.sent_blocks)
            values = await _read_checksums(self.reader, self.sent_blocks, count)
            self.session.send_block_checksums(self.req.stream_id, self.sent_blocks, values)
            for index, value in enumerate(values, self.sent_blocks):
                self.sums[index] = value
            self.sent_blocks += count

    async def _read(self, start: int, size: int) -> tuple[memoryview, int]:
        gateway = self.session.gateway
        buffer = (
            await gateway.pool.acquire()
            if self.chunk == gateway.pool.size
            else memory.aligned_buffer(self.chunk)
        )
        try:
            await _read_exactly(self.reader, start, memoryview(buffer)[:size])
            return buffer, size
        except BaseException:
            self._release(buffer)
            raise

    def _release(self, buffer: memoryview) -> None:
        pool = self.session.gateway.pool
        if len(buffer) == pool.size:
            pool.release(buffer)

    def _hand_off(self, buffer: memoryview) -> Callable[[], None]:
        """What QUIC calls once it no longer needs ``buffer`` (sent and acknowledged)."""
        pool = self.session.gateway.pool
        if len(buffer) == pool.size:
            return pool.hand_off(buffer)
        return _nothing

    async def run(self) -> None:
        session = self.session
        size = self.reader.info.size
        bs = self.block_size
        # Reads are block-aligned so that every block read can be verified whole.
        aligned_start = self.offset - self.offset % bs
        reads: deque[tuple[int, int, asyncio.Task[tuple[memoryview, int]]]] = deque()
        next_read = aligned_start
        loop = asyncio.get_running_loop()
        try:
            # The first chunk is read inline, not in a task: from the page cache that takes
            # no suspension, so the response header, the data and (for a small object)
            # the FIN leave in one datagram. Later chunks are read ahead in tasks.
            first_size = min(self.chunk, size - next_read)
            first: tuple[int, int] | None = (next_read, first_size)
            next_read += first_size
            while first is not None or reads or next_read < self.end:
                while next_read < self.end and len(reads) < session.config.reads_in_flight:
                    read_size = min(self.chunk, size - next_read)
                    reads.append(
                        (next_read, read_size, loop.create_task(self._read(next_read, read_size)))
                    )
                    next_read += read_size
                # No reference to a sent buffer may outlive its iteration: once QUIC has
                # it, a GET waiting here for its next read would otherwise keep it alive
                # (one buffer per waiting GET, outside every bound).
                if first is not None:
                    start, read_size = first
                    first = None
                    await self._send_chunk(start, *await self._read(start, read_size))
                else:
                    # Still in ``reads`` while awaited: if this task is cancelled as the
                    # read completes, the finally below gets its buffer back.
                    start, read_size, task = reads[0]
                    read = await task
                    reads.popleft()
                    del task  # a finished task holds its result (the buffer)
                    await self._send_chunk(start, *read)
                    del read
        finally:
            for _, _, task in reads:
                task.cancel()
                with contextlib.suppress(BaseException):
                    buffer, _ = await task
                    self._release(buffer)

    async def _send_chunk(self, start: int, buffer: memoryview, got: int) -> None:
        """Verify the ``got`` bytes read at ``start`` into ``buffer`` and hand the part in
        the range to QUIC (the buffer goes back to the pool when QUIC is done with it, or
        at once if nothing of it is sent)."""
        session = self.session
        sid = self.req.stream_id
        bs = self.block_size
        held: memoryview | None = buffer
        try:
            chunk_end = start + got
            await self._ensure_checksums(-(-min(chunk_end, self.end) // bs))
            view = memoryview(buffer)[:got]
            lo = max(self.offset, start) - start
            hi = min(self.end, chunk_end) - start
            bad_block = self._verify(start, view, lo, hi) if session.config.verify_reads else None
            if bad_block is not None:
                hi = max(lo, bad_block * bs - start)  # the good blocks before it
            await session.wait_writable(sid, self.small)
            if hi > lo:
                give_back = self._hand_off(buffer)
                if not session.send_body(sid, view[lo:hi], give_back):
                    give_back()
                    held = None
                    raise asyncio.CancelledError
                held = None  # the send buffer owns it now
            self.req.bytes_out += hi - lo
            session.gateway.metrics.bytes_sent += hi - lo
            session.driver.transmit_soon(message=True)
            if bad_block is not None:
                # Let the verified bytes arrive before the reset (which would drop them),
                # so the client knows exactly where the damage starts.
                await session.stream_drained(sid, timeout=5.0)
                raise RequestError(
                    ErrorCode.QS_INTEGRITY_ERROR, f"stored block {bad_block} is corrupt"
                )
        finally:
            if held is not None:
                self._release(held)

    def _verify(self, start: int, view: memoryview, lo: int, hi: int) -> int | None:
        """Check every block that ``view[lo:hi]`` touches (reads are block-aligned, so each
        such block lies whole in ``view``); return the first that fails, if any."""
        bs = self.block_size
        for index in blocks_touched(start + lo, hi - lo, bs):
            lo = index * bs - start
            block = view[lo : lo + bs]
            if crc32c(block) != self.sums.get(index):
                self.session.gateway.metrics.integrity_failures += 1
                log.error(
                    "integrity: %s/%s block %d (bytes %d-%d) does not match its stored CRC32C",
                    self.req.header.bucket,
                    self.req.header.key,
                    index,
                    index * bs,
                    index * bs + len(block) - 1,
                )
                return index
        return None


def build_quic_configuration(
    config: GatewayConfig, cert_file: str, key_file: str
) -> QuicConfiguration:
    """The server's QUIC configuration from the gateway's."""
    quic_config = QuicConfiguration(
        is_client=False,
        alpn_protocols=list(config.protocols),
        max_datagram_size=config.max_datagram_size or 1200,
        idle_timeout=config.idle_timeout,
        max_data=config.connection_window,
        max_stream_data=min(config.stream_window, compat.AUTOTUNE_START),
        congestion_control_algorithm=config.congestion_control,
    )
    quic_config.load_cert_chain(cert_file, key_file)
    if config.qlog_dir is not None:
        config.qlog_dir.mkdir(parents=True, exist_ok=True)
        quic_config.quic_logger = QuicFileLogger(str(config.qlog_dir))
    return quic_config
