"""The gateway's Prometheus endpoint: ``GET /metrics`` in the Prometheus text format (or
OpenMetrics when the scraper asks for it) on a TCP port of its own (``serve
--metrics-listen HOST:PORT``).

Nothing is counted twice: the request path keeps plain integers in
:class:`~quicstore.server.gateway.Metrics` (no locks, no label lookups per packet), and a
custom collector turns them, and the gateway's live state (send buffers, read buffers,
connections, the store's file system), into metric families when a scrape arrives. The
endpoint runs on the gateway's event loop, so the collector reads that state between two
steps of the loop, never half-updated. Each gateway has a private
:class:`~prometheus_client.CollectorRegistry` (a process may run many gateways, as the tests
do), holding that collector and the process collectors (CPU, memory, file descriptors, GC).

With ``serve --workers N`` every worker is its own process with its own counters, and
serves its own endpoint: worker ``i`` on port ``PORT + i`` (the supervisor binds all of
them before it forks, so a port in use stops the start, and a replaced worker serves on the
same socket). Scrape each as a target (series carry ``worker`` in ``quicstore_gateway_info``;
sum over targets for the gateway's totals). Prometheus' multiprocess mode would give one
port, but only for counters kept in shared files; live gauges such as send-buffer bytes,
read from each process's own state, would not fit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..transport import compat
from .gateway import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("quicstore.metrics")

HEADER_LIMIT = 8192
"""Bytes a scrape request's head (request line and headers) may have."""
HEADER_TIMEOUT = 5.0
"""Seconds a scraper has to send its request head before the connection is closed."""
MAX_SCRAPES = 16
"""Scrape connections served at once; more are closed at once (a scrape takes
milliseconds, so only a misbehaving client holds more)."""
DEFAULT_METRICS_HOST = "127.0.0.1"
"""Where ``--metrics-listen PORT`` listens: loopback, so nothing is exposed by accident."""


def parse_metrics_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on loopback) -> (host, port). Raises
    ValueError with a message naming the problem."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = DEFAULT_METRICS_HOST, text.strip()
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics-listen {text!r}: expected HOST:PORT or PORT (0-65535)")
    return host, int(port)


def bind_metrics_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets for ``count`` workers: on ``port + i`` (or each on a
    free port when ``port`` is 0). Raises ValueError if the ports run past 65535 and
    OSError (naming the address) if one cannot be bound."""
    if port and port + count - 1 > 65535:
        raise ValueError(
            f"--metrics-listen port {port} + {count} workers runs past 65535 "
            "(worker i listens on PORT + i)"
        )
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            sockets.append(bind_metrics_socket(host, port + index if port else 0))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_metrics_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) for the metrics endpoint."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen for metrics on {host}:{port}: {exc.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


def _error_label(key: str) -> tuple[str, str]:
    """(scope, code) of a key of ``Metrics.errors`` (``stream QS_X``, ``connection QS_X``,
    ``client certificate``, or a request outcome). A code the peer made up (hex) becomes
    ``unknown``: peers must not create label values."""
    scope, _, code = key.partition(" ")
    if scope not in ("stream", "connection"):
        if key == "client certificate":
            return "connection", "CLIENT_CERTIFICATE_REFUSED"
        scope, code = "request", key
    if code.startswith("0x"):
        code = "unknown"
    return scope, code


class GatewayCollector(Collector):
    """Metric families of one gateway, built from its counters and live state at each
    scrape (so the request path only increments integers). Call from the gateway's loop."""

    def __init__(self, gateway: Gateway, worker: int | None = None) -> None:
        """``worker``: the worker's index under ``serve --workers`` (None: single process)."""
        self.gateway = gateway
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        """Every quicstore_* family, current as of this call."""
        gw = self.gateway
        m = gw.metrics
        cfg = gw.config
        from .. import __version__

        info = InfoMetricFamily("quicstore_gateway", "The gateway process.")
        info.add_metric(
            [],
            {
                "version": __version__,
                "store": cfg.store,
                "protocols": ",".join(cfg.protocols),
                "worker": "" if self.worker is None else str(self.worker),
                "pid": str(os.getpid()),
                "python": platform.python_version(),
            },
        )
        yield info

        requests = CounterMetricFamily(
            "quicstore_requests",
            "Finished requests by protocol (ALPN), operation and outcome (ok, cancelled or "
            "an error code name).",
            labels=["protocol", "op", "outcome"],
        )
        for (protocol, op, outcome), count in sorted(m.outcomes.items()):
            requests.add_metric([protocol, op, outcome], count)
        yield requests

        latency = HistogramMetricFamily(
            "quicstore_request_duration_seconds",
            "Time from a request's arrival to its response handed to QUIC (the last byte "
            "queued, not acknowledged), seconds, by protocol and operation.",
            labels=["protocol", "op"],
        )
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for (protocol, op), histogram in sorted(m.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, histogram.counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            latency.add_metric([protocol, op], buckets, histogram.sum)
        yield latency

        yield CounterMetricFamily(
            "quicstore_sent_bytes", "Object bytes sent (GET bodies).", value=m.bytes_sent
        )
        yield CounterMetricFamily(
            "quicstore_received_bytes",
            "Object bytes received (PUT bodies).",
            value=m.bytes_received,
        )
        errors = CounterMetricFamily(
            "quicstore_errors",
            "Failures by scope (request, stream reset by the gateway's peer, connection "
            "closed by the gateway) and error code name.",
            labels=["scope", "code"],
        )
        merged: dict[tuple[str, str], int] = {}
        for key, count in m.errors.items():
            label = _error_label(key)
            merged[label] = merged.get(label, 0) + count
        for (scope, code), count in sorted(merged.items()):
            errors.add_metric([scope, code], count)
        yield errors
        yield CounterMetricFamily(
            "quicstore_integrity_failures",
            "Blocks read from the store that failed their stored CRC32C (not sent).",
            value=m.integrity_failures,
        )

        yield CounterMetricFamily(
            "quicstore_connections",
            "QUIC connections accepted.",
            value=m.connections_total,
        )
        yield GaugeMetricFamily(
            "quicstore_connections_open",
            "QUIC connections open (handshaking or established).",
            value=m.connections_open,
        )
        sessions = GaugeMetricFamily(
            "quicstore_sessions_open",
            "Established connections by protocol (ALPN).",
            labels=["protocol"],
        )
        by_protocol: dict[str, int] = {}
        for session in gw.sessions:
            protocol = str(getattr(session, "alpn", "quicstore/1"))
            by_protocol[protocol] = by_protocol.get(protocol, 0) + 1
        for protocol, count in sorted(by_protocol.items()):
            sessions.add_metric([protocol], count)
        yield sessions
        yield GaugeMetricFamily(
            "quicstore_streams_open", "Requests in progress.", value=m.streams_open
        )
        endpoint = gw.endpoint
        yield CounterMetricFamily(
            "quicstore_connections_refused",
            "Connections refused (per-address limit).",
            value=endpoint.refused if endpoint else 0,
        )
        yield CounterMetricFamily(
            "quicstore_retries_sent",
            "Retry packets sent (address validation).",
            value=endpoint.retries_sent if endpoint else 0,
        )
        yield GaugeMetricFamily(
            "quicstore_accepting",
            "1 while new connections are accepted, 0 once shutting down.",
            value=1 if endpoint is not None and endpoint.accepting else 0,
        )

        yield GaugeMetricFamily(
            "quicstore_send_buffer_bytes",
            "Response bytes queued in QUIC send buffers and not yet acknowledged, all connections.",
            value=sum(compat.unacknowledged_bytes(s.quic) for s in gw.sessions),
        )
        yield GaugeMetricFamily(
            "quicstore_send_buffer_limit_bytes",
            "Bound on the send-buffer bytes of all connections (GETs wait above it).",
            value=cfg.gateway_send_buffer,
        )
        yield GaugeMetricFamily(
            "quicstore_send_buffer_waiting_connections",
            "Connections whose GETs wait for gateway-wide send-buffer space.",
            value=gw.send_buffer_waiters,
        )
        pool = gw.pool
        yield GaugeMetricFamily(
            "quicstore_read_buffers_in_use",
            "Pooled disk read buffers held by GETs (each read_chunk bytes).",
            value=pool.in_use,
        )
        yield GaugeMetricFamily(
            "quicstore_read_buffers_limit",
            "Pooled disk read buffers that may exist.",
            value=pool.count,
        )

        if cfg.store == "disk":
            try:
                stat = os.statvfs(cfg.root)
            except OSError:
                return
            size = stat.f_blocks * stat.f_frsize
            yield GaugeMetricFamily(
                "quicstore_store_filesystem_size_bytes",
                "Size of the file system holding the store.",
                value=size,
            )
            yield GaugeMetricFamily(
                "quicstore_store_filesystem_used_bytes",
                "Bytes in use on the file system holding the store.",
                value=size - stat.f_bfree * stat.f_frsize,
            )
            yield GaugeMetricFamily(
                "quicstore_store_filesystem_avail_bytes",
                "Bytes the gateway may still write on the store's file system (PUTs fail "
                "with QS_STORAGE_FULL near 0).",
                value=stat.f_bavail * stat.f_frsize,
            )


def build_registry(gateway: Gateway, worker: int | None = None) -> CollectorRegistry:
    """A private registry: the gateway's collector and this process's CPU, memory, file
    descriptor, GC and platform collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, worker))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsServer:
    """A minimal HTTP/1.1 server for ``GET /metrics`` on the gateway's event loop. One
    request per connection; anything else gets a short error status: 404 (other paths), 405
    (methods other than GET), 400 (a malformed or oversized request head, or none in
    :data:`HEADER_TIMEOUT` seconds)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.scrapes = 0
        """Metrics responses sent."""
        self._server: asyncio.Server | None = None
        self._active = 0

    async def start(
        self, host: str = DEFAULT_METRICS_HOST, port: int = 0, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        """Listen on ``sock`` (already bound and listening) or on (host, port); returns
        the bound (host, port). Raises OSError naming the address if it cannot bind."""
        if sock is None:
            sock = bind_metrics_socket(host, port)
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=HEADER_LIMIT)
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    async def close(self) -> None:
        """Stop listening and wait for scrapes in progress to end."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), HEADER_TIMEOUT)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= MAX_SCRAPES:
            writer.close()
            return
        self._active += 1
        try:
            status, headers, body = await self._respond(reader)
            head = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
            head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), HEADER_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), HEADER_TIMEOUT)

    async def _respond(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        plain = [("Content-Type", "text/plain; charset=utf-8")]
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return "400 Bad Request", plain, b"expected an HTTP/1.1 request head\n"
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", plain, b"malformed request line\n"
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", plain, b"metrics are at /metrics\n"
        if method != "GET":
            return "405 Method Not Allowed", [*plain, ("Allow", "GET")], b"GET only\n"
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:
            log.exception("collecting metrics failed")
            return "500 Internal Server Error", plain, b"collecting metrics failed\n"
        self.scrapes += 1
        return "200 OK", [("Content-Type", content_type)], body
