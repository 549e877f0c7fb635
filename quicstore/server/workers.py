"""Several gateway processes on one UDP port (``serve --workers N``).

Each worker is a full gateway (its own event loop, QUIC connections and disk I/O threads)
on its own socket; all the sockets are bound to the same port with SO_REUSEPORT, and the
kernel sends each peer address (4-tuple) to one of them, so a connection stays with the
worker that accepted it. The supervisor (this process) prepares what the workers share
(certificate, token secrets, the store's crash recovery), binds the sockets, forks the
workers, relays SIGTERM/SIGINT (graceful shutdown) and SIGHUP (secret reload) to them, and
replaces a worker that dies, on the same socket, so no datagram is sent to a closed port.

Metrics (``--metrics-listen HOST:PORT``): each worker serves its own Prometheus endpoint,
worker ``i`` on ``PORT + i``; the supervisor binds those TCP sockets before forking too (see
:mod:`quicstore.server.metrics` for why not one port).

What does not carry across workers: a connection that migrates to a new client address
may land on another worker (and fails); session tickets are kept per worker, so
resumption and 0-RTT succeed only when the new connection reaches the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from ..proto.codes import ALPN
from ..transport.endpoint import bind_udp
from .config import GatewayConfig
from .state import ensure_certificate, load_secrets

log = logging.getLogger("quicstore.workers")

RESTART_LIMIT = 5
"""Workers that may die within :data:`RESTART_WINDOW` seconds before the supervisor gives
up and stops the others (a crash loop is a bug, not load)."""
RESTART_WINDOW = 30.0


class RunWorker(Protocol):
    """What a worker process runs: the gateway on its share of the UDP port, with its
    metrics socket (if metrics are on) and its index; returns the exit status."""

    def __call__(
        self, sock: socket.socket, *, metrics_sock: socket.socket | None, worker: int
    ) -> int: ...


def bind_worker_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets sharing (host, port); port 0 picks one free port for all."""
    sockets = [bind_udp(host, port, reuse_port=True)]
    try:
        bound_port = sockets[0].getsockname()[1]
        sockets.extend(bind_udp(host, bound_port, reuse_port=True) for _ in range(count - 1))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def prepare_shared_state(config: GatewayConfig) -> str:
    """Create what every worker reads (certificate, secrets) and recover the store once,
    before any worker opens it. Returns the certificate's fingerprint."""
    from .app import open_store

    if config.store != "disk":
        raise ValueError("--workers needs the disk store (the memory store is per process)")
    config.root.mkdir(parents=True, exist_ok=True)
    tls = ensure_certificate(config.root, config.cert_file, config.key_file)
    if not config.open_access:
        load_secrets(config.root, config.secrets_file, create=True)

    async def recover() -> None:
        store = await open_store(config, recover=True)
        await store.close()

    asyncio.run(recover())  # its I/O threads are joined on close: safe to fork after
    return tls.fingerprint + (" (generated)" if tls.generated else "")


def run_workers(
    config: GatewayConfig,
    run_worker: RunWorker,
    announce: Callable[[str], None] = print,
) -> int:
    """Supervise ``config.workers`` processes, each calling ``run_worker(sock, ...)`` with
    its sockets; returns when all have exited after SIGTERM/SIGINT (0), or when workers keep
    dying (1)."""
    from .metrics import bind_metrics_sockets

    fingerprint = prepare_shared_state(config)
    metrics_sockets: list[socket.socket] = []
    if config.metrics_listen is not None:
        metrics_sockets = bind_metrics_sockets(*config.metrics_listen, config.workers)
    try:
        sockets = bind_worker_sockets(config.host, config.port, config.workers)
    except OSError:
        for sock in metrics_sockets:
            sock.close()
        raise
    sockets += metrics_sockets
    host, port = sockets[0].getsockname()[:2]
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    deaths: list[float] = []
    status = 0

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                mine = {index, config.workers + index} if metrics_sockets else {index}
                for other, sock in enumerate(sockets):
                    if other not in mine:
                        sock.close()
                code = run_worker(
                    sockets[index],
                    metrics_sock=sockets[config.workers + index] if metrics_sockets else None,
                    worker=index,
                )
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index

    def relay(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {
        sig: signal.signal(sig, relay) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        for index in range(config.workers):
            spawn(index)
        for index, sock in enumerate(metrics_sockets):
            metrics_host, metrics_port = sock.getsockname()[:2]
            shown_host = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
            announce(f"metrics: http://{shown_host}:{metrics_port}/metrics (worker {index})")
        shown = f"[{host}]" if ":" in host else host
        announce(
            f"quicstore gateway listening on quicstore://{shown}:{port} (ALPN {ALPN}), "
            f"store {config.store} at {config.root}, {config.workers} workers"
        )
        announce(f"certificate sha256 fingerprint: {fingerprint}")
        if config.open_access:
            announce("WARNING: open access: requests need no token")
        while children:
            pid, wait_status = os.wait()
            if pid not in children:
                continue
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping:
                status = max(status, 1 if code else 0)
                continue
            now = time.monotonic()
            deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            if len(deaths) > RESTART_LIMIT:
                log.error("workers keep exiting (last: %d, status %d): stopping", index, code)
                announce(f"worker {index} exited with status {code}; too many restarts, stopping")
                relay(signal.SIGTERM, None)
                status = 1
                continue
            announce(f"worker {index} (pid {pid}) exited with status {code}; restarting it")
            spawn(index)
        announce("stopped: all workers exited")
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
