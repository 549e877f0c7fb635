"""Survival: a full disk, an unreadable store file, a lossy path, vanishing clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration

import quicstore
from quicstore.client.client import Client
from quicstore.proto.codes import ALPN
from quicstore.proto.messages import RequestHeader
from tools.impair_proxy import ImpairmentConfig, start_proxy

from .serverproc import GatewayProcess

MIB = 1024 * 1024


@contextlib.contextmanager
def small_filesystem(path: Path, size_mib: int) -> Iterator[str]:
    """A tmpfs of ``size_mib`` at ``path`` (real ENOSPC); where mounting is not permitted,
    the gateway runs with RLIMIT_FSIZE instead (EFBIG, the same refusal)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_disk_full_during_put_is_a_clean_error(tmp_path: Path) -> None:
    root = tmp_path / "small"
    with small_filesystem(root, 24) as kind:
        limit = 24 * MIB if kind == "rlimit" else None

        def cap_file_size() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        gw = GatewayProcess(root, extra=["--open"], preexec_fn=cap_file_size).start()
        try:
            async with Client(gw.url, ca_file=gw.ca) as c:
                await c.put("data", "small", b"fits")
                with pytest.raises(quicstore.RequestFailed) as exc:
                    await c.put("data", "huge", os.urandom(40 * MIB))
                assert exc.value.code_name == "QS_INSUFFICIENT_STORAGE"
                with pytest.raises(quicstore.NotFound):
                    await c.stat("data", "huge")
                assert await c.get("data", "small") == b"fits"  # still serving
            assert list((root / "store" / "tmp").iterdir()) == []
        finally:
            assert gw.stop() == 0


async def test_unreadable_store_file_is_a_clean_error(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    try:
        async with Client(gw.url, ca_file=gw.ca) as c:
            await c.put("data", "victim", b"v" * 1000)
            await c.put("data", "other", b"o" * 1000)
            victim = next(
                p
                for p in (tmp_path / "store" / "data").rglob("*.obj")
                if p.read_bytes() == b"v" * 1000
            )
            victim.unlink()
            victim.mkdir()  # opening it now fails (EISDIR), as an unreadable file would
            with pytest.raises(quicstore.RequestFailed) as exc:
                await c.get("data", "victim")
            assert exc.value.code_name == "QS_INTERNAL_ERROR"
            assert await c.get("data", "other") == b"o" * 1000
    finally:
        assert gw.stop() == 0


async def test_lossy_reordering_duplicating_path_keeps_data_identical(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    impairment = ImpairmentConfig(
        delay_ms=2, loss=0.03, reorder=0.03, duplicate=0.03, seed=7, lifetime_s=120
    )
    proxy = await start_proxy(impairment, ("127.0.0.1", 0), ("127.0.0.1", gw.port))
    try:
        host, port = proxy.address[:2]
        body = os.urandom(6 * MIB)
        async with Client(
            f"quicstore://{host}:{port}", ca_file=gw.ca, server_name="localhost"
        ) as c:
            await asyncio.wait_for(c.put("data", "lossy", body), timeout=120)
            got = await asyncio.wait_for(c.get("data", "lossy"), timeout=120)
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        counters = proxy.counters
        print(counters.as_dict())
        assert counters.up.datagrams_dropped > 0 and counters.down.datagrams_dropped > 0
        assert counters.down.datagrams_duplicated > 0
        assert counters.down.datagrams_reordered > 0
    finally:
        await proxy.close()
        assert gw.stop() == 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
async def test_a_thousand_vanishing_clients_leave_nothing_behind(tmp_path: Path) -> None:
    from quicstore.client.session import ClientSession
    from quicstore.transport.endpoint import connect_quic, paced_quic_factory

    gw = GatewayProcess(
        tmp_path,
        extra=[
            "--open",
            "--silence-timeout",
            "5",
            "--idle-timeout",
            "30",
            "--max-connections-per-address",
            "2000",
            "--retry-threshold",
            "0",
        ],
    ).start()
    try:
        async with Client(gw.url, ca_file=gw.ca) as c:
            await c.put("data", "big", os.urandom(16 * MIB))
            await c.get("data", "big")  # warm: the baseline includes a served GET
        baseline_fds, baseline_rss = fd_count(gw.pid), rss_mib(gw.pid)

        async def vanish() -> None:
            config = QuicConfiguration(
                is_client=True, alpn_protocols=[ALPN], server_name="localhost"
            )
            config.load_verify_locations(cafile=str(gw.ca))
            sessions: list[ClientSession] = []

            def handler(driver: object) -> ClientSession:
                sessions.append(ClientSession(driver))  # type: ignore[arg-type]
                return sessions[0]

            driver, transport = await connect_quic(
                "127.0.0.1",
                gw.port,
                config,
                handler,
                quic_factory=paced_quic_factory(256 * 1024, 1 * MIB),
            )
            session = sessions[0]
            got = asyncio.get_running_loop().create_future()

            def on_data(data: object) -> bool:
                if not got.done():
                    got.set_result(None)
                return False  # never consume: the gateway's window fills, then we vanish

            session.start(RequestHeader(op="GET", bucket="data", key="big"), on_data=on_data)
            # Data arrives; or, with the gateway's send budget taken by earlier vanished
            # clients and this process busy, the gateway may drop us as silent first.
            await asyncio.wait(
                [got, asyncio.ensure_future(asyncio.shield(driver.closed))],
                timeout=60,
                return_when=asyncio.FIRST_COMPLETED,
            )
            served.append(got.done())
            transport.close()  # gone: no CONNECTION_CLOSE, no more ACKs
            driver.abort("vanished")  # (stop this side's timers too)

        served: list[bool] = []
        for _ in range(20):
            await asyncio.gather(*(vanish() for _ in range(50)))
        peak_fds = fd_count(gw.pid)
        assert len(served) == 1000 and sum(served) >= 900, sum(served)

        async def settled() -> None:
            while fd_count(gw.pid) > baseline_fds + 2 or rss_mib(gw.pid) > baseline_rss + 20:
                await asyncio.sleep(0.5)

        await asyncio.wait_for(settled(), timeout=90)
        async with Client(gw.url, ca_file=gw.ca) as c:  # and it still serves
            assert len(await c.get("data", "big")) == 16 * MIB
        after_rss = rss_mib(gw.pid)
        print(
            f"{sum(served)} of 1000 vanishing clients got data first; fds {baseline_fds} -> "
            f"{peak_fds} (peak) -> {fd_count(gw.pid)}; RSS {baseline_rss} MiB -> "
            f"{after_rss} MiB"
        )
        assert after_rss <= baseline_rss + 20
    finally:
        assert gw.stop() == 0
