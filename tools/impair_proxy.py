"""A userspace UDP impairment proxy: delay, jitter, loss, reordering, duplication and a rate cap.

``tc netem`` is not available on the project's machines, so this proxy sits between a QUIC
client and server (normally on loopback) and impairs the datagrams it relays, deterministically
from a seed.  It behaves like a NAT: every distinct client address gets its own upstream UDP
socket, connected to the server, so several clients and connections work at once.

Directions: ``up`` is client -> server (datagrams arriving on the listening socket), ``down`` is
server -> client (datagrams arriving on a session's upstream socket).

Per datagram, in this order (each knob is applied in both directions, except loss which may be
set per direction):

1. loss: dropped with probability ``loss`` (``loss_up``/``loss_down`` override it);
2. rate cap: when ``rate_mbps > 0``, the datagram joins a tail-drop bottleneck queue of
   ``queue_bytes`` and leaves it at the capped rate (one bottleneck per direction, shared by all
   sessions, as a link would be);
3. delay: ``delay_ms`` plus a uniform jitter in ``[-jitter_ms, +jitter_ms]`` (clamped at 0).
   Jitter never reorders: a datagram never leaves before the one that arrived before it in the
   same direction (reordering is the ``reorder`` knob's job, so it stays countable);
4. reordering: with probability ``reorder`` the datagram is held back ``reorder_delay_ms`` more,
   outside that FIFO, so later datagrams overtake it;
5. duplication: with probability ``duplicate`` a second copy follows the original through the
   bottleneck and the FIFO delay line (so if the original is held back, the copy arrives first).

Delays are scheduled with ``loop.call_at``: one timer per direction for the FIFO delay line
(armed for its head) and one per held-back (reordered) datagram; nothing sleeps per packet.
With every knob at zero a direction is a pass-through: receive, count, send, nothing else.
Times come from the event loop's clock: under uvloop (the CLI's default when installed) that
clock and its timers count whole milliseconds, so delays are exact to 1 ms there.

Throughput ceiling: one CPU core.  On the project's 2-core VM (``--selftest-throughput``) it is
about 100 000 datagrams/s on the clean path (~120 MB/s at 1200 bytes, ~2.5-3.4 GB/s at 60 000
bytes), which is two syscalls per datagram plus ~1 us of Python; the delay line costs ~15 %.
Run the CLI as its own process when the endpoints are CPU-bound, so it does not share their core.

Command line (prints ``impair-proxy listening HOST:PORT`` when ready, and one JSON line of
counters at exit: SIGTERM, SIGINT or ``--lifetime`` elapsed)::

    python tools/impair_proxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:4433 \\
        --delay-ms 10 --jitter-ms 0 --loss 0.01 --reorder 0 --duplicate 0 --rate-mbps 0 \\
        --seed 1 --lifetime 120 [--loss-up P] [--loss-down P]
    python tools/impair_proxy.py --selftest-throughput      # the proxy's own clean-path ceiling

In-process::

    handle = await start_proxy(ImpairmentConfig(delay_ms=10, loss=0.01), "127.0.0.1:0",
                               ("127.0.0.1", server_port))
    ...  # point the client at handle.address
    await handle.close()
    print(handle.counters.up.datagrams_dropped)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TextIO

Direction = Literal["up", "down"]
"""``"up"`` is client -> server, ``"down"`` is server -> client."""

READY_PREFIX = "impair-proxy listening"
"""The ready line printed by the CLI is ``f"{READY_PREFIX} {HOST}:{PORT}"`` (IPv6: ``[HOST]``)."""

_MAX_DATAGRAM = 65536  # bytes: larger than any UDP payload over IPv4 or non-jumbo IPv6
_RECV_BATCH = 64  # datagrams read per readiness callback before yielding to the loop
_MIB = 1024 * 1024

_COUNT_FIELDS = (
    "datagrams_in",
    "bytes_in",
    "datagrams_out",
    "bytes_out",
    "datagrams_dropped",
    "bytes_dropped",
    "datagrams_too_large",
    "datagrams_duplicated",
    "bytes_duplicated",
    "datagrams_reordered",
    "bytes_reordered",
    "datagrams_queue_dropped",
    "bytes_queue_dropped",
    "datagrams_abandoned",
    "send_errors",
    "recv_errors",
)


# --------------------------------------------------------------------------------------------
# Configuration and counters
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImpairmentConfig:
    """What the proxy does to datagrams, and the bounds it keeps.  All fields keyword-only.

    Probabilities are per datagram, in ``[0, 1]``.  Defaults impair nothing (pass-through).
    """

    delay_ms: float = 0.0
    """One-way base delay added in each direction, in milliseconds (RTT grows by twice this)."""

    jitter_ms: float = 0.0
    """Half-width of a uniform jitter added to ``delay_ms``, in milliseconds; the total is clamped
    at 0 and never lets a datagram overtake an earlier one in the same direction."""

    loss: float = 0.0
    """Probability of dropping a datagram, in both directions unless overridden below."""

    loss_up: float | None = None
    """Loss probability client -> server; ``None`` means use ``loss``."""

    loss_down: float | None = None
    """Loss probability server -> client; ``None`` means use ``loss``."""

    reorder: float = 0.0
    """Probability of holding a datagram back by ``reorder_delay_ms`` so later ones overtake it."""

    reorder_delay_ms: float = 5.0
    """Extra hold for a reordered datagram, in milliseconds (default: a few ms puts it behind
    several datagrams at any useful rate, which is what trips QUIC's packet-threshold loss
    detection)."""

    max_datagram: int = 0
    """Datagrams larger than this many bytes of UDP payload are dropped silently, in both
    directions, as on a path whose MTU is smaller than the endpoints' routes claim (a
    tunnel that blackholes large packets); 0 means no limit."""

    duplicate: float = 0.0
    """Probability of sending a datagram twice (the copy follows the original through the rate
    cap and delay line, never held back itself)."""

    rate_mbps: float = 0.0
    """Rate cap per direction in megabits per second (10**6 bit/s) of UDP payload (IP/UDP
    headers not counted); 0 means no cap.  All sessions share one bottleneck per direction."""

    queue_bytes: int = _MIB
    """Bottleneck buffer per direction in bytes when ``rate_mbps > 0``; a datagram that does not
    fit is tail-dropped (default 1 MiB: about 84 ms of queue at 100 Mbit/s)."""

    seed: int = 1
    """Seed of the impairment decisions.  Each session (numbered 0, 1, ... in the order sessions
    open, i.e. new client addresses appear), direction and knob has its own ``random.Random``,
    drawn exactly once per arriving datagram while the knob is non-zero, so the decisions for the
    n-th datagram of a session's direction depend only on (seed, session number, direction, n):
    not on timing, on other sessions' traffic, or on the other knobs."""

    lifetime_s: float = 120.0
    """The proxy closes itself after this many seconds (bounded lifetime; must be > 0)."""

    max_sessions: int = 256
    """At most this many client addresses (each holds one upstream socket); datagrams from
    further clients are refused and counted."""

    session_idle_s: float = 60.0
    """A session with no datagram in either direction for between this and twice this many
    seconds is closed and its upstream socket freed; 0 disables expiry."""

    max_held_bytes: int = 64 * _MIB
    """Memory bound per direction: payload bytes held in the delay line and held-back
    (reordered) set; beyond it datagrams are dropped and counted as queue drops."""

    max_held_datagrams: int = 65536
    """Memory bound per direction on the number of held datagrams, as above."""

    socket_buffer_bytes: int = 4 * _MIB
    """SO_RCVBUF/SO_SNDBUF requested on every proxy socket, in bytes (the kernel caps it at
    net.core.rmem_max/wmem_max)."""

    def __post_init__(self) -> None:
        for name in ("loss", "loss_up", "loss_down", "reorder", "duplicate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("delay_ms", "jitter_ms", "reorder_delay_ms", "rate_mbps", "session_idle_s"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.lifetime_s > 0.0:
            raise ValueError(f"lifetime_s must be > 0, got {self.lifetime_s!r}")
        if self.max_datagram < 0:
            raise ValueError(f"max_datagram must be >= 0, got {self.max_datagram!r}")
        for name in ("queue_bytes", "max_sessions", "max_held_bytes", "max_held_datagrams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.socket_buffer_bytes < 0:
            raise ValueError("socket_buffer_bytes must be >= 0")

    def loss_for(self, direction: Direction) -> float:
        """The loss probability that applies to ``direction``."""
        override = self.loss_up if direction == "up" else self.loss_down
        return self.loss if override is None else override

    def is_passthrough(self, direction: Direction) -> bool:
        """True when ``direction`` is not impaired at all (the fast path)."""
        return (
            self.loss_for(direction) == 0.0
            and self.delay_ms == 0.0
            and self.jitter_ms == 0.0
            and self.reorder == 0.0
            and self.duplicate == 0.0
            and self.rate_mbps == 0.0
        )


@dataclasses.dataclass(frozen=True)
class DirectionCounters:
    """Counts for one direction, summed over all sessions.  ``datagrams_*`` count datagrams,
    ``bytes_*`` count UDP payload bytes.

    Once the proxy is closed: ``datagrams_in + datagrams_duplicated == datagrams_out +
    datagrams_dropped + datagrams_too_large + datagrams_queue_dropped + datagrams_abandoned +
    send_errors``.
    """

    datagrams_in: int = 0
    """Datagrams received in this direction."""
    bytes_in: int = 0
    """Bytes received in this direction."""
    datagrams_out: int = 0
    """Datagrams sent on (duplicates included)."""
    bytes_out: int = 0
    """Bytes sent on (duplicates included)."""
    datagrams_dropped: int = 0
    """Datagrams dropped by the random loss."""
    datagrams_too_large: int = 0
    """Datagrams dropped for exceeding ``max_datagram``."""
    bytes_dropped: int = 0
    """Bytes dropped by the random loss."""
    datagrams_duplicated: int = 0
    """Extra copies made by duplication."""
    bytes_duplicated: int = 0
    """Bytes of the extra copies."""
    datagrams_reordered: int = 0
    """Datagrams held back by ``reorder_delay_ms``."""
    bytes_reordered: int = 0
    """Bytes of the held-back datagrams."""
    datagrams_queue_dropped: int = 0
    """Datagrams dropped because the bottleneck queue or a memory bound was full."""
    bytes_queue_dropped: int = 0
    """Bytes of those."""
    datagrams_abandoned: int = 0
    """Datagrams still waiting in a delay when their session or the proxy closed."""
    send_errors: int = 0
    """Sends that failed (e.g. ECONNREFUSED from a closed server port, full socket buffer)."""
    recv_errors: int = 0
    """Receives that failed on the sockets feeding this direction."""


@dataclasses.dataclass(frozen=True)
class ProxyCounters:
    """A snapshot of the proxy's counters."""

    up: DirectionCounters
    """Client -> server."""
    down: DirectionCounters
    """Server -> client."""
    sessions_opened: int
    """Client addresses seen (upstream sockets opened) since start."""
    sessions_active: int
    """Sessions open now."""
    sessions_refused: int
    """New client addresses turned away by ``max_sessions`` or a socket error."""
    datagrams_refused: int
    """Datagrams from refused client addresses (not counted in ``up``)."""
    elapsed_s: float
    """Seconds since start (until close, once closed)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# The data path
# --------------------------------------------------------------------------------------------


class _Counts:
    __slots__ = _COUNT_FIELDS
    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    datagrams_dropped: int
    bytes_dropped: int
    datagrams_too_large: int
    datagrams_duplicated: int
    bytes_duplicated: int
    datagrams_reordered: int
    bytes_reordered: int
    datagrams_queue_dropped: int
    bytes_queue_dropped: int
    datagrams_abandoned: int
    send_errors: int
    recv_errors: int

    def __init__(self) -> None:
        for name in _COUNT_FIELDS:
            setattr(self, name, 0)

    def add_to(self, total: _Counts) -> None:
        for name in _COUNT_FIELDS:
            setattr(total, name, getattr(total, name) + getattr(self, name))

    def snapshot(self) -> DirectionCounters:
        return DirectionCounters(**{name: getattr(self, name) for name in _COUNT_FIELDS})


class _Dir(_Counts):
    """One session's pipeline in one direction: counters, RNGs and where to send."""

    __slots__ = (
        "delay_s",
        "dup",
        "dup_rng",
        "jitter_rng",
        "jitter_s",
        "link",
        "loss",
        "loss_rng",
        "max_datagram",
        "passthrough",
        "reorder",
        "reorder_rng",
        "send",
    )

    def __init__(
        self,
        config: ImpairmentConfig,
        direction: Direction,
        ordinal: int,
        link: _Link,
        send: Callable[[bytes], object],
    ) -> None:
        super().__init__()
        self.send = send
        self.link = link
        self.passthrough = config.is_passthrough(direction)
        self.loss = config.loss_for(direction)
        self.delay_s = config.delay_ms / 1000.0
        self.jitter_s = config.jitter_ms / 1000.0
        self.reorder = config.reorder
        self.dup = config.duplicate
        self.max_datagram = config.max_datagram

        def rng(knob: str) -> random.Random:
            return random.Random(f"{config.seed}/{ordinal}/{direction}/{knob}")

        self.loss_rng = rng("loss")
        self.jitter_rng = rng("jitter")
        self.reorder_rng = rng("reorder")
        self.dup_rng = rng("duplicate")

    def push(self, data: bytes) -> None:
        """A datagram arrived for this direction."""
        n = len(data)
        self.datagrams_in += 1
        self.bytes_in += n
        if self.max_datagram and n > self.max_datagram:
            self.datagrams_too_large += 1
            return
        if self.passthrough:
            try:
                self.send(data)
            except OSError:
                self.send_errors += 1
                return
            self.datagrams_out += 1
            self.bytes_out += n
            return
        # Draw each enabled knob once per datagram whatever the outcome (ImpairmentConfig.seed).
        lost = self.loss != 0.0 and self.loss_rng.random() < self.loss
        delay = self.delay_s
        if self.jitter_s:
            delay += (2.0 * self.jitter_rng.random() - 1.0) * self.jitter_s
        hold = self.reorder != 0.0 and self.reorder_rng.random() < self.reorder
        dup = self.dup != 0.0 and self.dup_rng.random() < self.dup
        if lost:
            self.datagrams_dropped += 1
            self.bytes_dropped += n
            return
        if delay < 0.0:
            delay = 0.0
        link = self.link
        link.submit(self, data, n, delay, hold)
        if dup:
            self.datagrams_duplicated += 1
            self.bytes_duplicated += n
            link.submit(self, data, n, delay, False)

    def emit(self, data: bytes) -> None:
        """Send a datagram whose time has come."""
        try:
            self.send(data)
        except OSError:
            self.send_errors += 1
            return
        self.datagrams_out += 1
        self.bytes_out += len(data)


class _Link:
    """One direction's shared bottleneck and delay line (FIFO, one timer), plus held datagrams."""

    __slots__ = (
        "granularity",
        "held",
        "held_bytes",
        "held_count",
        "held_seq",
        "last_due",
        "line",
        "link_free",
        "loop",
        "max_bytes",
        "max_count",
        "queue_bytes",
        "rate_bps",
        "reorder_s",
        "timer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, config: ImpairmentConfig) -> None:
        self.loop = loop
        self.rate_bps = config.rate_mbps * 1e6 / 8.0  # bytes per second; 0 = no cap
        self.queue_bytes = config.queue_bytes
        self.reorder_s = config.reorder_delay_ms / 1000.0
        # uvloop's clock and timers have whole-millisecond resolution (timers are rounded to the
        # nearest ms, so they may fire up to 0.5 ms early): a not-yet-due head is re-armed at
        # least one tick later instead of spinning through zero-timeout iterations.
        self.granularity = 0.001 if type(loop).__module__.startswith("uvloop") else 0.0
        self.max_bytes = config.max_held_bytes
        self.max_count = config.max_held_datagrams
        self.line: collections.deque[tuple[float, _Dir, bytes]] = collections.deque()
        self.held: dict[int, tuple[asyncio.TimerHandle, float, _Dir, bytes]] = {}
        self.held_seq = 0
        self.held_bytes = 0
        self.held_count = 0
        self.timer: asyncio.TimerHandle | None = None
        self.link_free = 0.0  # loop time at which the bottleneck is idle again
        self.last_due = 0.0  # departure time of the latest datagram in the FIFO line

    def submit(self, d: _Dir, data: bytes, n: int, delay: float, hold: bool) -> None:
        now = self.loop.time()
        if self.rate_bps:
            start = self.link_free if self.link_free > now else now
            if (start - now) * self.rate_bps + n > self.queue_bytes:
                d.datagrams_queue_dropped += 1
                d.bytes_queue_dropped += n
                return
            self.link_free = start + n / self.rate_bps
            due = self.link_free + delay
        else:
            due = now + delay
            if not hold and due <= now and not self.line:
                d.emit(data)
                return
        if self.held_bytes + n > self.max_bytes or self.held_count >= self.max_count:
            d.datagrams_queue_dropped += 1
            d.bytes_queue_dropped += n
            return
        self.held_bytes += n
        self.held_count += 1
        if hold:
            d.datagrams_reordered += 1
            d.bytes_reordered += n
            self.held_seq += 1
            key = self.held_seq
            due += self.reorder_s
            handle = self.loop.call_at(due, self._fire_held, key)
            self.held[key] = (handle, due, d, data)
            return
        if due < self.last_due:
            due = self.last_due
        self.last_due = due
        self.line.append((due, d, data))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        line = self.line
        now = self.loop.time()
        while line:
            due, d, data = line[0]
            if due > now:  # never early
                self.timer = self.loop.call_at(max(due, now + self.granularity), self._fire)
                return
            line.popleft()
            self.held_bytes -= len(data)
            self.held_count -= 1
            d.emit(data)

    def _fire_held(self, key: int) -> None:
        _handle, due, d, data = self.held[key]
        now = self.loop.time()
        if due > now:  # never early
            handle = self.loop.call_at(max(due, now + self.granularity), self._fire_held, key)
            self.held[key] = (handle, due, d, data)
            return
        del self.held[key]
        self.held_bytes -= len(data)
        self.held_count -= 1
        d.emit(data)

    def purge(self, d: _Dir | None) -> None:
        """Abandon the waiting datagrams of ``d`` (all of them when ``d`` is None)."""
        kept: collections.deque[tuple[float, _Dir, bytes]] = collections.deque()
        for entry in self.line:
            if d is None or entry[1] is d:
                entry[1].datagrams_abandoned += 1
                self.held_bytes -= len(entry[2])
                self.held_count -= 1
            else:
                kept.append(entry)
        self.line = kept
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if kept:
            self.timer = self.loop.call_at(kept[0][0], self._fire)
        for key, (handle, _due, owner, data) in list(self.held.items()):
            if d is None or owner is d:
                handle.cancel()
                del self.held[key]
                owner.datagrams_abandoned += 1
                self.held_bytes -= len(data)
                self.held_count -= 1


class _Session:
    """One client address and its upstream socket."""

    __slots__ = ("activity_mark", "addr", "down", "ordinal", "sock", "up")

    def __init__(self, addr: Any, sock: socket.socket, up: _Dir, down: _Dir, ordinal: int):
        self.addr = addr
        self.sock = sock
        self.up = up
        self.down = down
        self.ordinal = ordinal
        self.activity_mark = -1

    def on_readable(self) -> None:
        recv = self.sock.recv
        push = self.down.push
        for _ in range(_RECV_BATCH):
            try:
                data = recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:  # e.g. ECONNREFUSED after an ICMP port unreachable
                self.down.recv_errors += 1
                continue
            push(data)


def _tune(sock: socket.socket, buffer_bytes: int) -> None:
    sock.setblocking(False)
    if buffer_bytes:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)


class ProxyHandle:
    """A running proxy, made by :func:`start_proxy`.  Also an async context manager (closes on
    exit)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ImpairmentConfig,
        listen_sock: socket.socket,
        upstream: tuple[Any, ...],
        upstream_family: int,
    ) -> None:
        self.config = config
        """The impairment configuration in force."""
        self.upstream: tuple[str, int] = (upstream[0], upstream[1])
        """The server's (host, port)."""
        self.close_reason: str | None = None
        """Why the proxy closed (``"closed"``, ``"lifetime"``, a signal name...), None while
        running."""
        self._loop = loop
        self._listen = listen_sock
        host, port = listen_sock.getsockname()[:2]
        self._address: tuple[str, int] = (host, port)
        self._upstream_sockaddr = upstream
        self._upstream_family = upstream_family
        self._sessions: dict[Any, _Session] = {}
        self._pushers: dict[Any, Callable[[bytes], None]] = {}
        self._links: dict[Direction, _Link] = {
            "up": _Link(loop, config),
            "down": _Link(loop, config),
        }
        self._retired: dict[Direction, _Counts] = {"up": _Counts(), "down": _Counts()}
        self._sessions_opened = 0
        self._sessions_refused = 0
        self._datagrams_refused = 0
        self._started = loop.time()
        self._stopped: float | None = None
        self._closed = asyncio.Event()
        self._lifetime = loop.call_later(config.lifetime_s, self.close_now, "lifetime")
        self._sweeper: asyncio.TimerHandle | None = None
        if config.session_idle_s > 0:
            self._sweeper = loop.call_later(config.session_idle_s, self._sweep)
        loop.add_reader(listen_sock.fileno(), self._on_listen_readable)

    # -- public ------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) clients should send to."""
        return self._address

    @property
    def closed(self) -> bool:
        """True once the proxy has closed (by :meth:`close`, a signal or its lifetime)."""
        return self.close_reason is not None

    @property
    def counters(self) -> ProxyCounters:
        """A fresh snapshot of the counters (cheap enough to poll, not free: sums sessions)."""
        totals: dict[Direction, _Counts] = {}
        for direction in ("up", "down"):
            total = _Counts()
            self._retired[direction].add_to(total)
            for session in self._sessions.values():
                (session.up if direction == "up" else session.down).add_to(total)
            totals[direction] = total
        end = self._stopped if self._stopped is not None else self._loop.time()
        return ProxyCounters(
            up=totals["up"].snapshot(),
            down=totals["down"].snapshot(),
            sessions_opened=self._sessions_opened,
            sessions_active=len(self._sessions),
            sessions_refused=self._sessions_refused,
            datagrams_refused=self._datagrams_refused,
            elapsed_s=round(end - self._started, 6),
        )

    def upstream_addresses(self) -> dict[tuple[str, int], tuple[str, int]]:
        """For each live session: client (host, port) -> the local (host, port) of its upstream
        socket, i.e. the source address the server sees."""
        return {
            (s.addr[0], s.addr[1]): tuple(s.sock.getsockname()[:2]) for s in self._sessions.values()
        }

    def close_now(self, reason: str = "closed") -> None:
        """Close synchronously (idempotent): stop reading, abandon delayed datagrams, close
        every socket.  Safe to call from a signal handler installed with
        ``loop.add_signal_handler``."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._stopped = self._loop.time()
        self._lifetime.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._loop.remove_reader(self._listen.fileno())
        for link in self._links.values():
            link.purge(None)
        for addr in list(self._sessions):
            self._close_session(addr)
        self._listen.close()
        self._closed.set()

    async def close(self) -> None:
        """Close (idempotent); see :meth:`close_now`."""
        self.close_now()

    async def wait_closed(self) -> None:
        """Return once the proxy has closed, e.g. when its lifetime has elapsed."""
        await self._closed.wait()

    async def __aenter__(self) -> ProxyHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------------

    def _on_listen_readable(self) -> None:
        recvfrom = self._listen.recvfrom
        pushers = self._pushers
        for _ in range(_RECV_BATCH):
            try:
                data, addr = recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                self._retired["up"].recv_errors += 1
                continue
            push = pushers.get(addr)
            if push is None:
                push = self._open_session(addr)
                if push is None:
                    self._datagrams_refused += 1
                    continue
            push(data)

    def _open_session(self, addr: Any) -> Callable[[bytes], None] | None:
        if len(self._sessions) >= self.config.max_sessions:
            self._sessions_refused += 1
            return None
        try:
            sock = socket.socket(self._upstream_family, socket.SOCK_DGRAM)
        except OSError:
            self._sessions_refused += 1
            return None
        try:
            _tune(sock, self.config.socket_buffer_bytes)
            sock.connect(self._upstream_sockaddr)
            ordinal = self._sessions_opened
            sendto = self._listen.sendto

            def send_down(data: bytes) -> int:
                return sendto(data, addr)

            up = _Dir(self.config, "up", ordinal, self._links["up"], sock.send)
            down = _Dir(self.config, "down", ordinal, self._links["down"], send_down)
            session = _Session(addr, sock, up, down, ordinal)
            self._loop.add_reader(sock.fileno(), session.on_readable)
        except OSError:
            sock.close()
            self._sessions_refused += 1
            return None
        self._sessions_opened += 1
        self._sessions[addr] = session
        self._pushers[addr] = up.push
        return up.push

    def _close_session(self, addr: Any) -> None:
        session = self._sessions.pop(addr)
        del self._pushers[addr]
        self._links["up"].purge(session.up)
        self._links["down"].purge(session.down)
        self._loop.remove_reader(session.sock.fileno())
        session.sock.close()
        session.up.add_to(self._retired["up"])
        session.down.add_to(self._retired["down"])

    def _sweep(self) -> None:
        """Close the sessions with no datagram since the previous sweep; re-arm."""
        if self.closed:
            return
        for addr, session in list(self._sessions.items()):
            activity = session.up.datagrams_in + session.down.datagrams_in
            if activity == session.activity_mark:
                self._close_session(addr)
            else:
                session.activity_mark = activity
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.config.session_idle_s > 0:
            self._sweeper = self._loop.call_later(self.config.session_idle_s, self._sweep)


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:4433"`` or ``"[::1]:4433"`` -> (host, port).  Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def format_hostport(address: tuple[str, int]) -> str:
    """(host, port) -> ``"host:port"`` (``"[host]:port"`` for IPv6)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _resolve(
    loop: asyncio.AbstractEventLoop, address: tuple[str, int] | str
) -> tuple[int, tuple[Any, ...]]:
    host, port = parse_hostport(address) if isinstance(address, str) else address
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _type, _proto, _name, sockaddr = infos[0]
    return int(family), tuple(sockaddr)


async def start_proxy(
    config: ImpairmentConfig,
    listen: tuple[str, int] | str,
    upstream: tuple[str, int] | str,
) -> ProxyHandle:
    """Bind ``listen`` (port 0 picks a free one) and relay to ``upstream`` with ``config``'s
    impairments, in the running event loop, until closed or ``config.lifetime_s`` elapses.

    Addresses are (host, port) or ``"host:port"``.  Raises OSError if ``listen`` cannot be bound
    or either address cannot be resolved.
    """
    loop = asyncio.get_running_loop()
    listen_family, listen_addr = await _resolve(loop, listen)
    up_family, up_addr = await _resolve(loop, upstream)
    sock = socket.socket(listen_family, socket.SOCK_DGRAM)
    try:
        _tune(sock, config.socket_buffer_bytes)
        sock.bind(listen_addr)
        return ProxyHandle(loop, config, sock, up_addr, up_family)
    except BaseException:
        sock.close()
        raise


# --------------------------------------------------------------------------------------------
# Throughput self-test
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ThroughputResult:
    """One clean-path throughput measurement (see :func:`measure_throughput`)."""

    datagram_size: int
    """UDP payload per datagram, bytes."""
    via_proxy: bool
    """False for the baseline: the same load generator straight to the sink."""
    sent: int
    """Datagrams sent by the load generator."""
    received: int
    """Datagrams that reached the sink."""
    bytes_received: int
    """Payload bytes that reached the sink."""
    duration_s: float
    """Seconds from the first send to the last arrival."""
    mb_per_s: float
    """Delivered payload rate in MB/s (10**6 bytes per second)."""
    datagrams_per_s: float
    """Delivered datagrams per second."""
    proxy_cpu_s: float | None
    """CPU seconds this process (the proxy) used meanwhile; None for the baseline."""
    proxy_busy: float | None
    """``proxy_cpu_s / duration_s``: near 1.0 means the proxy was the bottleneck (one core);
    well below it means the load generator was, and the proxy's ceiling is higher."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return dataclasses.asdict(self)


def _loadgen_child(size: int, count: int, window_bytes: int, buffer_bytes: int) -> int:
    """Child side of :func:`measure_throughput`: a sink and a windowed sender, one thread.

    Protocol on stdio: prints ``sink PORT``; reads ``target HOST PORT``; prints one JSON line.
    The sender keeps at most ``window_bytes`` (at least 4 datagrams) in flight, counting a
    datagram as delivered when it reaches the sink, so the measured rate is the path's
    ceiling rather than the loss rate of an overrun socket buffer.
    """
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sink, src:
        for s in (sink, src):
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        print(f"sink {sink.getsockname()[1]}", flush=True)
        words = sys.stdin.readline().split()
        if len(words) != 3 or words[0] != "target":
            return 2
        src.connect((words[1], int(words[2])))
        payload = os.urandom(size)
        buf = bytearray(_MAX_DATAGRAM)
        limit = max(4, window_bytes // size)
        send, recv_into = src.send, sink.recv_into
        sent = received = nbytes = presumed_lost = 0
        stall_s, idle_s, deadline = 0.02, 0.0, time.monotonic() + 300.0
        t0 = t_last = time.perf_counter()
        while received < count and time.monotonic() < deadline:
            while sent < count and sent - received - presumed_lost < limit:
                send(payload)
                sent += 1
            got = 0
            while True:
                try:
                    n = recv_into(buf)
                except BlockingIOError:
                    break
                got += 1
                nbytes += n
            if got:
                received += got
                t_last = time.perf_counter()
                idle_s = 0.0
                continue
            if sent < count and sent - received - presumed_lost < limit:
                continue
            readable, _, _ = select.select([sink], [], [], stall_s)
            if not readable:  # nothing for stall_s: what is in flight is lost
                presumed_lost = sent - received
                if sent >= count:
                    idle_s += stall_s
                    if idle_s >= 0.5:
                        break
        duration = max(t_last - t0, 1e-9)
        print(
            json.dumps(
                {
                    "sent": sent,
                    "received": received,
                    "bytes_received": nbytes,
                    "duration_s": duration,
                }
            ),
            flush=True,
        )
    return 0


async def measure_throughput(
    datagram_size: int = 60_000,
    count: int | None = None,
    *,
    via_proxy: bool = True,
    config: ImpairmentConfig | None = None,
    window_bytes: int = _MIB,
    timeout_s: float = 120.0,
) -> ThroughputResult:
    """Measure the proxy's clean-path ceiling on loopback, in the running event loop.

    The proxy runs in this process (as it does for in-process users); the load generator and
    sink run in a child process (this file, ``--loadgen-child``), so they do not compete for
    this process's interpreter.  The sender keeps ``window_bytes`` in flight (one direction,
    client -> server).  ``count`` defaults to about 3 GB or 200 000 datagrams, whichever is
    fewer; ``via_proxy=False`` measures the load generator alone (the baseline).  ``config``
    defaults to a pass-through (note that a delay caps the rate at ``window_bytes / delay``).
    """
    if not 1 <= datagram_size <= 65507:
        raise ValueError("datagram_size must be in [1, 65507] bytes")
    if count is None:
        count = max(1000, min(200_000, 3_000_000_000 // datagram_size))
    config = config or ImpairmentConfig(lifetime_s=max(timeout_s, 1.0))
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--loadgen-child",
        f"{datagram_size},{count},{window_bytes},{config.socket_buffer_bytes}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    handle: ProxyHandle | None = None
    try:
        words = (await asyncio.wait_for(proc.stdout.readline(), 30.0)).split()
        sink_port = int(words[1])
        target = ("127.0.0.1", sink_port)
        if via_proxy:
            handle = await start_proxy(config, ("127.0.0.1", 0), target)
            target = handle.address
        cpu0 = time.process_time()
        proc.stdin.write(f"target {target[0]} {target[1]}\n".encode())
        await proc.stdin.drain()
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        cpu_s = time.process_time() - cpu0
        report = json.loads(raw)
    finally:
        if handle is not None:
            await handle.close()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.communicate()
    duration = float(report["duration_s"])
    return ThroughputResult(
        datagram_size=datagram_size,
        via_proxy=via_proxy,
        sent=int(report["sent"]),
        received=int(report["received"]),
        bytes_received=int(report["bytes_received"]),
        duration_s=round(duration, 6),
        mb_per_s=round(report["bytes_received"] / duration / 1e6, 1),
        datagrams_per_s=round(report["received"] / duration, 1),
        proxy_cpu_s=round(cpu_s, 3) if via_proxy else None,
        proxy_busy=round(min(cpu_s / duration, 9.99), 2) if via_proxy else None,
    )


async def run_selftest(
    sizes: Sequence[int],
    count: int | None,
    config: ImpairmentConfig | None = None,
    out: TextIO | None = None,
) -> list[ThroughputResult]:
    """For each datagram size: the baseline, then via the proxy; prints a summary line and a
    JSON line per measurement to ``out`` (default stdout)."""
    out = out or sys.stdout
    results: list[ThroughputResult] = []
    for size in sizes:
        for via_proxy in (False, True):
            r = await measure_throughput(size, count, via_proxy=via_proxy, config=config)
            results.append(r)
            label = "via proxy" if via_proxy else "direct   "
            busy = f", proxy CPU {r.proxy_busy:.0%}" if r.proxy_busy is not None else ""
            print(
                f"size {size:>6} B {label}: {r.mb_per_s:>8.1f} MB/s {r.datagrams_per_s:>10.0f}"
                f" datagrams/s ({r.received}/{r.sent} delivered in {r.duration_s:.3f} s{busy})",
                file=out,
            )
            print(json.dumps({"impair_proxy_selftest": r.as_dict()}), file=out, flush=True)
    return results


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog="impair_proxy.py",
        description="UDP impairment proxy (delay, jitter, loss, reordering, duplication, rate).",
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to bind (port 0: any)")
    p.add_argument("--upstream", help="server HOST:PORT (required unless --selftest-throughput)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction, ms")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter, ms")
    p.add_argument("--loss", type=float, default=0.0, help="loss probability, both directions")
    p.add_argument("--loss-up", type=float, default=None, help="loss client->server (override)")
    p.add_argument("--loss-down", type=float, default=None, help="loss server->client (override)")
    p.add_argument("--reorder", type=float, default=0.0, help="probability of holding back")
    p.add_argument("--reorder-delay-ms", type=float, default=5.0, help="hold-back time, ms")
    p.add_argument("--duplicate", type=float, default=0.0, help="probability of a second copy")
    p.add_argument(
        "--max-datagram", type=int, default=0, help="drop datagrams above this size (0: none)"
    )
    p.add_argument("--rate-mbps", type=float, default=0.0, help="rate cap, Mbit/s (0: none)")
    p.add_argument("--queue-bytes", type=int, default=_MIB, help="bottleneck buffer, bytes")
    p.add_argument("--seed", type=int, default=1, help="seed of the impairment decisions")
    p.add_argument("--lifetime", type=float, default=120.0, help="exit after this many seconds")
    p.add_argument("--max-sessions", type=int, default=256, help="client addresses at most")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="session idle expiry, s")
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    p.add_argument(
        "--selftest-throughput",
        action="store_true",
        help="measure the clean-path ceiling on loopback and exit",
    )
    p.add_argument(
        "--selftest-sizes",
        default="60000,1200",
        help="comma-separated datagram sizes for the self-test, bytes",
    )
    p.add_argument("--selftest-count", type=int, default=None, help="datagrams per measurement")
    p.add_argument("--loadgen-child", default=None, help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> ImpairmentConfig:
    """The ImpairmentConfig the parsed CLI arguments describe."""
    return ImpairmentConfig(
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss,
        loss_up=args.loss_up,
        loss_down=args.loss_down,
        reorder=args.reorder,
        reorder_delay_ms=args.reorder_delay_ms,
        duplicate=args.duplicate,
        max_datagram=args.max_datagram,
        rate_mbps=args.rate_mbps,
        queue_bytes=args.queue_bytes,
        seed=args.seed,
        lifetime_s=args.lifetime,
        max_sessions=args.max_sessions,
        session_idle_s=args.idle_timeout,
    )


async def _serve(config: ImpairmentConfig, listen: str, upstream: str) -> int:
    loop = asyncio.get_running_loop()
    handle = await start_proxy(config, listen, upstream)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle.close_now, sig.name)
    try:
        print(f"{READY_PREFIX} {format_hostport(handle.address)}", flush=True)
        await handle.wait_closed()
    finally:
        handle.close_now("error")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    report = {
        "impair_proxy": "counters",
        "reason": handle.close_reason,
        "listen": format_hostport(handle.address),
        "upstream": format_hostport(handle.upstream),
        **handle.counters.as_dict(),
        "config": dataclasses.asdict(config),
    }
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(report), flush=True)
    return 0


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.loadgen_child:
        size, count, window, buffers = (int(x) for x in args.loadgen_child.split(","))
        return _loadgen_child(size, count, window, buffers)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    with asyncio.Runner(loop_factory=_loop_factory(not args.no_uvloop)) as runner:
        if args.selftest_throughput:
            sizes = [int(s) for s in args.selftest_sizes.split(",") if s]
            runner.run(run_selftest(sizes, args.selftest_count, config))
            return 0
        if not args.upstream:
            parser.error("--upstream is required")
        return runner.run(_serve(config, args.listen, args.upstream))


if __name__ == "__main__":
    sys.exit(main())
