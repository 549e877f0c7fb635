"""tools/impair_proxy.py: pass-through, loss, delay, jitter, duplication, reordering, sessions,
lifetime and the CLI, over real UDP sockets on 127.0.0.1 (ephemeral ports only).

Synchronisation is by futures with timeouts, never sleeps.  Where a test must know that the
proxy has handled everything sent so far, it sends a "fence" datagram and waits for its echo:
loopback UDP and the proxy keep order when nothing is delayed, so the fence comes back last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from tools import impair_proxy as ip

TOOL = Path(__file__).resolve().parents[2] / "tools" / "impair_proxy.py"
LOCAL = ("127.0.0.1", 0)
WAIT = 10.0  # seconds: generous bound on any single wait


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that records what it receives (payload, source, loop time) and, as a
    server, echoes it back."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[bytes, Any, float]] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # room for a whole test batch even if read late
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr, self.loop.time()))
        if self.echo:
            assert self.transport is not None
            self.transport.sendto(data, addr)
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def payloads(self) -> list[bytes]:
        return [data for data, _, _ in self.received]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Until ``predicate()`` holds after some datagram (or already), at most ``timeout``."""
        if predicate():
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove(entry)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_endpoint(echo: bool = False, remote: tuple[str, int] | None = None) -> Endpoint:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: Endpoint(echo),
        local_addr=None if remote else LOCAL,
        remote_addr=remote,
    )
    return proto


@pytest.fixture
async def echo() -> AsyncIterator[Endpoint]:
    server = await open_endpoint(echo=True)
    yield server
    server.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Endpoint]]:
    """Clients opened by a test (append to the list); closed afterwards."""
    opened: list[Endpoint] = []
    yield opened
    for client in opened:
        client.close()


async def client_of(clients: list[Endpoint], proxy: ip.ProxyHandle) -> Endpoint:
    client = await open_endpoint(remote=proxy.address)
    clients.append(client)
    return client


async def fence(client: Endpoint, tag: str, attempts: int = 20, timeout: float = 0.25) -> int:
    """Send fence datagrams until one echoes back (by then everything sent before it has been
    handled); returns how many fences were sent."""
    for attempt in range(attempts):
        token = f"fence-{tag}-{attempt}".encode()
        client.send(token)
        try:
            await client.wait_for(lambda t=token: t in client.payloads(), timeout)
        except TimeoutError:
            continue
        return attempt + 1
    raise AssertionError("no fence came back")


# --------------------------------------------------------------------------------------------


def test_config_validation_and_per_direction_loss() -> None:
    c = ip.ImpairmentConfig(loss=0.2, loss_up=0.05)
    assert c.loss_for("up") == 0.05 and c.loss_for("down") == 0.2
    assert ip.ImpairmentConfig().is_passthrough("up")
    assert not ip.ImpairmentConfig(loss_down=0.1).is_passthrough("down")
    assert ip.ImpairmentConfig(loss_down=0.1).is_passthrough("up")
    for bad in ({"loss": 1.5}, {"loss_up": -0.1}, {"delay_ms": -1.0}, {"lifetime_s": 0.0}):
        with pytest.raises(ValueError):
            ip.ImpairmentConfig(**bad)
    assert ip.parse_hostport("127.0.0.1:0") == ("127.0.0.1", 0)
    assert ip.parse_hostport("[::1]:4433") == ("::1", 4433)
    assert ip.format_hostport(("::1", 4433)) == "[::1]:4433"
    with pytest.raises(ValueError):
        ip.parse_hostport("4433")


async def test_clean_pass_through_both_directions(echo: Endpoint, clients: list[Endpoint]) -> None:
    sizes = [1, 20, 1200, 1500, 9000, 60000, 65507]
    async with await ip.start_proxy(ip.ImpairmentConfig(), LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        sent = [bytes([i]) * size for i, size in enumerate(sizes)]
        for payload in sent:
            client.send(payload)
        await client.wait_for(lambda: len(client.received) == len(sent))
        assert client.payloads() == sent  # same bytes, same order
        assert echo.payloads() == sent
        (upstream_local,) = proxy.upstream_addresses().values()
        assert {addr[:2] for _, addr, _ in echo.received} == {upstream_local}
        c = proxy.counters
    total = sum(sizes)
    for d in (c.up, c.down):
        assert (d.datagrams_in, d.datagrams_out, d.bytes_in, d.bytes_out) == (7, 7, total, total)
        assert d.datagrams_dropped == d.datagrams_queue_dropped == d.send_errors == 0
    assert c.sessions_opened == 1


async def lossy_run(echo: Endpoint, clients: list[Endpoint], seed: int) -> tuple[set[int], Any]:
    """2000 datagrams through 10 % loss client->server (none back); returns the lost ones."""
    config = ip.ImpairmentConfig(loss=0.1, loss_down=0.0, seed=seed)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        fences = 0
        for batch in range(8):  # batches of 250: no socket buffer overflows
            for i in range(batch * 250, batch * 250 + 250):
                client.send(b"d%d" % i)
            fences += await fence(client, f"{seed}-{batch}")
        counters = proxy.counters
    got = {int(p[1:]) for p in client.payloads() if p.startswith(b"d")}
    lost = set(range(2000)) - got
    fences_lost = fences - sum(p.startswith(b"fence") for p in client.payloads())
    assert counters.up.datagrams_dropped == len(lost) + fences_lost
    assert counters.down.datagrams_dropped == 0
    return lost, counters


async def test_loss_rate_and_reproducible(echo: Endpoint, clients: list[Endpoint]) -> None:
    lost_a, counters_a = await lossy_run(echo, clients, seed=7)
    lost_b, counters_b = await lossy_run(echo, clients, seed=7)
    lost_c, _ = await lossy_run(echo, clients, seed=8)
    # Binomial(2000, 0.1): mean 200, sd 13.4; 60 is about 4.5 sd.
    assert abs(len(lost_a) - 200) <= 60
    assert lost_a == lost_b  # same seed, same datagram sequence: the very same losses
    assert counters_a == dataclasses.replace(counters_b, elapsed_s=counters_a.elapsed_s)
    assert lost_c != lost_a  # another seed, another pattern


async def test_delay_adds_at_least_the_configured_delay(
    echo: Endpoint, clients: list[Endpoint]
) -> None:
    loop = asyncio.get_running_loop()
    delay = 0.040
    config = ip.ImpairmentConfig(delay_ms=delay * 1000)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        sent_at: dict[bytes, float] = {}
        for i in range(5):
            token = b"p%d" % i
            sent_at[token] = loop.time()
            client.send(token)
        await client.wait_for(lambda: len(client.received) == 5)
    eps = 1e-6  # float rounding of loop times (uvloop's clock counts whole milliseconds)
    for data, _, t in echo.received:
        assert t - sent_at[data] >= delay - eps  # one way
    for data, _, t in client.received:
        rtt = t - sent_at[data]
        assert 2 * delay - eps <= rtt < 2 * delay + 2.0


async def test_jitter_never_reorders(echo: Endpoint, clients: list[Endpoint]) -> None:
    loop = asyncio.get_running_loop()
    config = ip.ImpairmentConfig(delay_ms=20, jitter_ms=15, seed=3)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        start = loop.time()
        for i in range(50):
            client.send(b"%d" % i)
        await client.wait_for(lambda: len(client.received) == 50)
        c = proxy.counters
    expected = [b"%d" % i for i in range(50)]
    assert echo.payloads() == expected and client.payloads() == expected
    assert all(t - start >= 0.005 for _, _, t in echo.received)  # 20 - 15 ms at least
    assert c.up.datagrams_reordered == c.down.datagrams_reordered == 0


async def test_duplication_counted(echo: Endpoint, clients: list[Endpoint]) -> None:
    config = ip.ImpairmentConfig(duplicate=1.0)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        for i in range(10):
            client.send(b"x%d" % i)
        await client.wait_for(lambda: len(client.received) == 40)
    c = proxy.counters
    assert len(echo.received) == 20
    assert (c.up.datagrams_in, c.up.datagrams_duplicated, c.up.datagrams_out) == (10, 10, 20)
    assert (c.down.datagrams_in, c.down.datagrams_duplicated, c.down.datagrams_out) == (20, 20, 40)
    assert c.up.bytes_duplicated == c.up.bytes_in
    assert sorted(client.payloads()) == sorted([b"x%d" % i for i in range(10)] * 4)


async def test_reordering_counted(echo: Endpoint, clients: list[Endpoint]) -> None:
    n = 100
    config = ip.ImpairmentConfig(reorder=0.2, reorder_delay_ms=300, seed=5)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        for i in range(n):  # one burst, far shorter than the 300 ms hold
            client.send(b"%d" % i)
        await client.wait_for(lambda: len(client.received) == n)
        c = proxy.counters
    arrivals = [int(p) for p in echo.payloads()]
    k = c.up.datagrams_reordered
    assert 5 <= k <= 40 and c.down.datagrams_reordered > 0
    assert sorted(arrivals) == list(range(n)) and arrivals != sorted(arrivals)
    # The held-back ones arrive after all the others, each group in its own order.
    assert arrivals[: n - k] == sorted(arrivals[: n - k])
    assert arrivals[n - k :] == sorted(arrivals[n - k :])
    assert c.up.datagrams_out == c.down.datagrams_out == n


async def test_two_clients_get_separate_upstream_sockets(
    echo: Endpoint, clients: list[Endpoint]
) -> None:
    async with await ip.start_proxy(ip.ImpairmentConfig(), LOCAL, echo.address) as proxy:
        a = await client_of(clients, proxy)
        b = await client_of(clients, proxy)
        a.send(b"from-a")
        b.send(b"from-b")
        await a.wait_for(lambda: len(a.received) == 1)
        await b.wait_for(lambda: len(b.received) == 1)
        assert a.payloads() == [b"from-a"] and b.payloads() == [b"from-b"]
        sources = {data: addr[:2] for data, addr, _ in echo.received}
        assert sources[b"from-a"] != sources[b"from-b"]
        upstream = proxy.upstream_addresses()
        assert sorted(upstream.values()) == sorted(sources.values())
        assert proxy.counters.sessions_opened == proxy.counters.sessions_active == 2


async def test_idle_session_expires(echo: Endpoint, clients: list[Endpoint]) -> None:
    # The sweep is driven by hand (a long idle time keeps the timer out of the way).
    async with await ip.start_proxy(
        ip.ImpairmentConfig(session_idle_s=3600), LOCAL, echo.address
    ) as proxy:
        client = await client_of(clients, proxy)
        client.send(b"one")
        await client.wait_for(lambda: len(client.received) == 1)
        proxy._sweep()  # marks the activity seen so far
        proxy._sweep()  # nothing since: the session closes, its upstream socket too
        assert proxy.counters.sessions_active == 0 and proxy.upstream_addresses() == {}
        client.send(b"two")  # the same client address opens a fresh session
        await client.wait_for(lambda: len(client.received) == 2)
        c = proxy.counters
    assert (c.sessions_opened, c.up.datagrams_in, c.down.datagrams_out) == (2, 2, 2)
    assert len({addr for _, addr, _ in echo.received}) == 2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_lifetime_closes_and_frees_sockets(echo: Endpoint, clients: list[Endpoint]) -> None:
    client = await open_endpoint()  # not yet connected anywhere; opened before counting fds
    clients.append(client)
    before = open_fds()
    proxy = await ip.start_proxy(ip.ImpairmentConfig(lifetime_s=0.3), LOCAL, echo.address)
    assert client.transport is not None
    client.transport.sendto(b"hello", proxy.address)
    await client.wait_for(lambda: len(client.received) == 1)
    assert open_fds() == before + 2  # listening socket + one upstream socket
    listen_port = proxy.address[1]
    await asyncio.wait_for(proxy.wait_closed(), WAIT)
    assert proxy.closed and proxy.close_reason == "lifetime"
    assert open_fds() == before
    assert proxy.counters.sessions_active == 0 and proxy.counters.up.datagrams_in == 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", listen_port))  # the port is free again
    await proxy.close()  # idempotent
    assert proxy.close_reason == "lifetime"


async def test_close_abandons_queued_datagrams(echo: Endpoint, clients: list[Endpoint]) -> None:
    # 0.01 Mbit/s = 1250 B/s: a 10-byte datagram leaves after 8 ms, each 1000-byte one takes 0.8 s.
    config = ip.ImpairmentConfig(rate_mbps=0.01)
    proxy = await ip.start_proxy(config, LOCAL, echo.address)
    client = await client_of(clients, proxy)
    client.send(b"s" * 10)
    for _ in range(3):
        client.send(b"b" * 1000)
    await echo.wait_for(lambda: len(echo.received) == 1)  # the proxy has read all four by now
    await proxy.close()
    c = proxy.counters.up
    assert (c.datagrams_in, c.datagrams_out, c.datagrams_abandoned) == (4, 1, 3)
    assert c.datagrams_in + c.datagrams_duplicated == (
        c.datagrams_out
        + c.datagrams_dropped
        + c.datagrams_queue_dropped
        + c.datagrams_abandoned
        + c.send_errors
    )


async def test_rate_cap_queue_tail_drops(echo: Endpoint, clients: list[Endpoint]) -> None:
    # 1 Mbit/s with a 10 000-byte queue: of a burst of 20 x 1000 bytes, about 10 fit.
    config = ip.ImpairmentConfig(rate_mbps=1.0, queue_bytes=10_000)
    async with await ip.start_proxy(config, LOCAL, echo.address) as proxy:
        client = await client_of(clients, proxy)
        for _ in range(20):
            client.send(b"q" * 1000)
        await echo.wait_for(lambda: len(echo.received) >= 1)
        c = proxy.counters.up
    assert c.datagrams_in == 20
    assert 8 <= c.datagrams_queue_dropped <= 12


async def start_cli(*args: str) -> tuple[asyncio.subprocess.Process, tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(TOOL), *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
    assert line.startswith(ip.READY_PREFIX + " "), line
    return proc, ip.parse_hostport(line.split()[-1])


async def stop_cli(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()


async def test_cli_ready_line_and_counters_at_sigterm(
    echo: Endpoint, clients: list[Endpoint]
) -> None:
    proc, address = await start_cli(
        "--listen", "127.0.0.1:0", "--upstream", ip.format_hostport(echo.address),
        "--delay-ms", "1", "--loss", "0", "--seed", "3", "--lifetime", "60",
    )  # fmt: skip
    try:
        client = await open_endpoint(remote=address)
        clients.append(client)
        client.send(b"ping")
        await client.wait_for(lambda: client.payloads() == [b"ping"])
        proc.send_signal(signal.SIGTERM)  # to its own PID only
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        await stop_cli(proc)
    assert proc.returncode == 0
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["reason"] == "SIGTERM"
    assert report["up"]["datagrams_in"] == report["up"]["datagrams_out"] == 1
    assert report["down"]["bytes_out"] == 4
    assert report["sessions_opened"] == 1 and report["config"]["seed"] == 3


async def test_cli_exits_when_lifetime_elapses(echo: Endpoint) -> None:
    proc, _ = await start_cli("--upstream", ip.format_hostport(echo.address), "--lifetime", "0.3")
    try:
        assert proc.stdout is not None
        out = await asyncio.wait_for(proc.stdout.read(), WAIT)
        await asyncio.wait_for(proc.wait(), WAIT)
    finally:
        await stop_cli(proc)
    assert proc.returncode == 0
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["reason"] == "lifetime" and report["up"]["datagrams_in"] == 0


async def test_throughput_selftest_runs() -> None:
    result = await ip.measure_throughput(1200, 2000)
    assert result.via_proxy and result.received == result.sent == 2000
    assert result.bytes_received == 2000 * 1200
    assert result.mb_per_s > 0 and result.proxy_busy is not None
