"""The Prometheus endpoint (quicstore.server.metrics): scraped over HTTP after real requests,
numbers that move with them, bad requests and bad flags, and one endpoint per worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import quicstore
from quicstore.cli.main import EXIT_USAGE
from quicstore.client.client import Client
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.server.gateway import LATENCY_BUCKETS
from quicstore.server.metrics import bind_metrics_sockets, parse_metrics_listen

from .serverproc import GatewayProcess
from .test_cli import run
from .test_workers import wait_for, worker_pids

Sample = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_LINE = re.compile(r"metrics: (http://\S+/metrics)(?: \(worker (\d+)\))?")


def fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    """Status and body of one HTTP request (blocking)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def parse(text: str) -> Sample:
    samples: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def scrape_sync(url: str) -> Sample:
    status, body = fetch(url)
    assert status == 200, body
    return parse(body.decode())


async def scrape(url: str) -> Sample:
    """Scrape from a thread: the in-process gateway serves on this loop."""
    return await asyncio.to_thread(scrape_sync, url)


def value(samples: Sample, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Sample, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def start_metered_gateway(root: Path) -> RunningGateway:
    """An open gateway over ``root`` on a free port, serving its metrics on a free port of
    127.0.0.1."""
    return await start_gateway(
        GatewayConfig(root=root, port=0, open_access=True, metrics_listen=("127.0.0.1", 0))
    )


async def test_scrape_counts_real_requests(tmp_path: Path) -> None:
    running = await start_metered_gateway(tmp_path / "gw")
    try:
        assert running.metrics is not None
        url = running.metrics.url
        assert url.startswith("http://127.0.0.1:")
        before = await scrape(url)
        assert value(before, "quicstore_requests_total", protocol="quicstore/1", op="GET") == 0
        # The client's CONNECTION_CLOSE reaches the gateway after the client is done: the
        # final scrape waits for the gateway to end the session.
        ended = asyncio.Event()
        end_session = running.gateway.session_ended

        def session_ended(session: Any) -> None:
            end_session(session)
            ended.set()

        running.gateway.session_ended = session_ended  # type: ignore[method-assign]
        body = os.urandom(300_000)
        async with Client(running.url, ca_file=running.tls.cert_file) as c:
            await c.put("data", "k", body)
            assert await c.get("data", "k") == body
            # A block-aligned range (the client widens others to whole 64 KiB blocks).
            ranged = await c.get("data", "k", offset=65536, length=65536)
            assert ranged == body[65536:131072]
            with pytest.raises(quicstore.NotFound):
                await c.get("data", "missing")
            assert [o.key for o in await c.list_all("data")] == ["k"]
            during = await scrape(url)
            assert value(during, "quicstore_connections_open") == 1
            assert value(during, "quicstore_sessions_open", protocol="quicstore/1") == 1
        await asyncio.wait_for(ended.wait(), timeout=10)
        after = await scrape(url)
    finally:
        await running.stop(drain_timeout=2)

    def requests(samples: Sample, op: str, outcome: str) -> float:
        return value(
            samples, "quicstore_requests_total", protocol="quicstore/1", op=op, outcome=outcome
        )

    assert requests(after, "PUT", "ok") == 1
    assert requests(after, "GET", "ok") == 2
    assert requests(after, "GET", "QS_NOT_FOUND") == 1
    assert requests(after, "LIST", "ok") == 1
    assert value(after, "quicstore_sent_bytes_total") == len(body) + 65536
    assert value(after, "quicstore_received_bytes_total") == len(body)
    assert value(after, "quicstore_errors_total", scope="request", code="QS_NOT_FOUND") == 1
    assert value(after, "quicstore_connections_total") == 1
    assert value(after, "quicstore_connections_open") == 0
    assert value(after, "quicstore_streams_open") == 0
    assert value(after, "quicstore_integrity_failures_total") == 0
    # The latency histogram saw every GET where it finished, in cumulative buckets.
    get = {"protocol": "quicstore/1", "op": "GET"}
    assert value(after, "quicstore_request_duration_seconds_count", **get) == 3
    assert value(after, "quicstore_request_duration_seconds_bucket", le="+Inf", **get) == 3
    assert 0 < value(after, "quicstore_request_duration_seconds_sum", **get) < 60
    buckets = [
        value(after, "quicstore_request_duration_seconds_bucket", le=repr(float(b)), **get)
        for b in LATENCY_BUCKETS
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 3
    # Live state and the process.
    assert value(after, "quicstore_send_buffer_limit_bytes") == 64 * 1024 * 1024
    assert value(after, "quicstore_read_buffers_in_use") == 0
    assert value(after, "quicstore_store_filesystem_avail_bytes") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    info = [ls for (n, ls) in after if n == "quicstore_gateway_info"]
    assert len(info) == 1 and ("pid", str(os.getpid())) in info[0]


async def test_h3_requests_are_counted_by_protocol(tmp_path: Path) -> None:
    from quicstore.client.http3 import Http3Client

    running = await start_metered_gateway(tmp_path / "gw")
    try:
        assert running.metrics is not None
        async with Client(running.url, ca_file=running.tls.cert_file) as c:
            await c.put("data", "k", b"x" * 1000)
        h3 = await Http3Client.connect(
            "127.0.0.1", running.port, ca_file=running.tls.cert_file, server_name="localhost"
        )
        try:
            response = await h3.request("GET", "/data/k")
            assert response.status == 200 and response.body == b"x" * 1000
        finally:
            await h3.close()
        after = await scrape(running.metrics.url)
    finally:
        await running.stop(drain_timeout=2)
    assert value(after, "quicstore_requests_total", protocol="h3", op="GET", outcome="ok") == 1
    assert value(after, "quicstore_request_duration_seconds_count", protocol="h3", op="GET") == 1
    assert value(after, "quicstore_sent_bytes_total") == 1000


async def test_integrity_failure_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "gw"
    running = await start_metered_gateway(root)
    try:
        assert running.metrics is not None
        async with Client(running.url, ca_file=running.tls.cert_file) as c:
            await c.put("data", "victim", os.urandom(300_000))
            (data_file,) = (root / "store" / "data").rglob("*.obj")
            with data_file.open("r+b") as f:  # flip one bit in block 2
                f.seek(150_000)
                byte = f.read(1)
                f.seek(150_000)
                f.write(bytes([byte[0] ^ 0x10]))
            with pytest.raises(quicstore.IntegrityError):
                await c.get("data", "victim")
        after = await scrape(running.metrics.url)
    finally:
        await running.stop(drain_timeout=2)
    assert value(after, "quicstore_integrity_failures_total") >= 1


async def test_bad_requests_get_clear_statuses(tmp_path: Path) -> None:
    running = await start_metered_gateway(tmp_path / "gw")
    try:
        assert running.metrics is not None
        host, port = running.metrics.address
        base = f"http://{host}:{port}"
        assert (await asyncio.to_thread(fetch, f"{base}/other"))[0] == 404
        assert (await asyncio.to_thread(fetch, f"{base}/metrics", "POST"))[0] == 405

        async def raw(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
            return answer

        assert (await raw(b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await raw(b"GET /metrics HTTP/1.1\r\n")).startswith(b"HTTP/1.1 400 ")
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await raw(huge)).startswith(b"HTTP/1.1 400 ")
        # OpenMetrics when asked for.
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )

        def openmetrics() -> tuple[str, bytes]:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["Content-Type"], response.read()

        content_type, body = await asyncio.to_thread(openmetrics)
        assert content_type.startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        # Still serving after all that.
        assert value(await scrape(f"{base}/metrics"), "quicstore_accepting") == 1
    finally:
        await running.stop(drain_timeout=2)


def test_parse_metrics_listen() -> None:
    assert parse_metrics_listen("9100") == ("127.0.0.1", 9100)
    assert parse_metrics_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_metrics_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("", "host:", ":9100", "x", "1:99999", "h:p"):
        with pytest.raises(ValueError, match="--metrics-listen"):
            parse_metrics_listen(bad)


def test_bind_metrics_sockets_port_plus_index() -> None:
    for _ in range(20):  # find two free neighbouring ports (bounded)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        if base >= 65535:
            continue
        try:
            sockets = bind_metrics_sockets("127.0.0.1", base, 2)
        except OSError:
            continue
        try:
            assert [s.getsockname()[1] for s in sockets] == [base, base + 1]
            with pytest.raises(OSError, match=f"cannot listen for metrics on 127.0.0.1:{base}"):
                bind_metrics_sockets("127.0.0.1", base, 1)
        finally:
            for s in sockets:
                s.close()
        break
    else:
        pytest.fail("no two free neighbouring ports in 20 tries")
    with pytest.raises(ValueError, match="65535"):
        bind_metrics_sockets("127.0.0.1", 65535, 2)


def test_serve_rejects_bad_metrics_flags(tmp_path: Path) -> None:
    for extra in (
        ["--metrics-listen", "nonsense:port"],
        ["--metrics-listen", "127.0.0.1:70000"],
        ["--metrics-listen", "65535", "--workers", "2"],
    ):
        result = run("serve", "--root", str(tmp_path), "--listen", "127.0.0.1:0", *extra)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert b"--metrics-listen" in result.stderr and b"Traceback" not in result.stderr


def test_serve_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = run(
            "serve", "--root", str(tmp_path), "--listen", "127.0.0.1:0", "--open",
            "--metrics-listen", f"127.0.0.1:{port}",
        )  # fmt: skip
    finally:
        taken.close()
    assert result.returncode != 0
    assert f"cannot listen for metrics on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def metrics_urls(gw: GatewayProcess) -> dict[int, str]:
    """Worker index (0 for a single process) -> metrics URL, from the start-up lines."""
    found = {}
    for line in gw.output:
        match = METRICS_LINE.search(line)
        if match:
            found[int(match.group(2) or 0)] = match.group(1)
    return found


def test_serve_flag_single_process(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open", "--metrics-listen", "0"]).start()
    try:
        (url,) = metrics_urls(gw).values()
        assert url.startswith("http://127.0.0.1:")
        asyncio.run(_round_trips(gw, 3))
        samples = scrape_sync(url)
        assert total(samples, "quicstore_requests_total", op="PUT", outcome="ok") == 3
        assert total(samples, "quicstore_requests_total", op="GET", outcome="ok") == 3
        assert value(samples, "quicstore_received_bytes_total") == 3 * 2000
    finally:
        assert gw.stop() == 0


async def _round_trips(gw: GatewayProcess, count: int) -> None:
    """``count`` clients, each its own connection: PUT 2000 bytes, GET them back."""

    async def one(i: int) -> None:
        async with Client(gw.url, ca_file=gw.ca) as client:
            await client.put("m", f"obj-{i}", bytes([i]) * 2000)
            assert await client.get("m", f"obj-{i}") == bytes([i]) * 2000

    await asyncio.gather(*(one(i) for i in range(count)))


def test_one_endpoint_per_worker(tmp_path: Path) -> None:
    """``--workers 2``: each worker serves its own counters on its own port (announced by
    the supervisor); together they count every request; a replaced worker serves on the
    same port."""
    gw = GatewayProcess(
        tmp_path / "root", extra=["--open", "--workers", "2", "--metrics-listen", "127.0.0.1:0"]
    ).start()
    try:
        wait_for(lambda: len(worker_pids(gw.pid)) == 2)
        urls = metrics_urls(gw)
        assert sorted(urls) == [0, 1] and urls[0] != urls[1]
        asyncio.run(_round_trips(gw, 16))
        scraped = {index: scrape_sync(url) for index, url in urls.items()}
        pids = set()
        for index, samples in scraped.items():
            (labels,) = [dict(ls) for (n, ls) in samples if n == "quicstore_gateway_info"]
            assert labels["worker"] == str(index)
            pids.add(int(labels["pid"]))
        assert pids == worker_pids(gw.pid)
        puts = [
            total(s, "quicstore_requests_total", op="PUT", outcome="ok") for s in scraped.values()
        ]
        gets = [
            total(s, "quicstore_requests_total", op="GET", outcome="ok") for s in scraped.values()
        ]
        assert sum(puts) == 16 and sum(gets) == 16
        assert sum(value(s, "quicstore_connections_total") for s in scraped.values()) == 16
        # Worker 0 dies; its replacement serves fresh counters on the same port.
        victim_pid = next(
            int(dict(ls)["pid"]) for (n, ls) in scraped[0] if n == "quicstore_gateway_info"
        )
        os.kill(victim_pid, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(gw.pid)) == 2 and victim_pid not in worker_pids(gw.pid))

        # The socket stayed open in the supervisor: this scrape waits in its backlog until
        # the new worker accepts it.
        fresh = scrape_sync(urls[0])
        (labels,) = [dict(ls) for (n, ls) in fresh if n == "quicstore_gateway_info"]
        assert labels["worker"] == "0" and int(labels["pid"]) in worker_pids(gw.pid)
        assert int(labels["pid"]) != victim_pid
        assert total(fresh, "quicstore_requests_total") == 0
    finally:
        status = gw.stop()
    assert status == 0
