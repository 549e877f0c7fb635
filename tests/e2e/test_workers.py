"""``quicstore serve --workers N``: processes sharing one port, supervised."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import pytest

import quicstore
from quicstore.cli.main import EXIT_USAGE

from .serverproc import GatewayProcess
from .test_cli import run

PID_IN_LOG = re.compile(r"INFO \[(\d+)\] quicstore\.access")


def worker_pids(gateway_pid: int) -> set[int]:
    children = Path(f"/proc/{gateway_pid}/task/{gateway_pid}/children").read_text().split()
    return {int(pid) for pid in children}


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


async def round_trips(url: str, ca: Path, count: int) -> None:
    """``count`` clients, each its own connection (and UDP port): PUT, then GET back."""

    async def one(i: int) -> None:
        body = os.urandom(200_000 + i)
        async with quicstore.Client(url, ca_file=ca) as client:
            await client.put("w", f"obj-{i}", body)
            assert await client.get("w", f"obj-{i}") == body

    await asyncio.gather(*(one(i) for i in range(count)))


def test_workers_share_the_port_survive_a_crash_and_stop_together(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "root", extra=["--open", "--workers", "2", "--access-log"])
    gw.start()
    try:
        wait_for(lambda: len(worker_pids(gw.pid)) == 2)
        first = worker_pids(gw.pid)
        asyncio.run(round_trips(gw.url, gw.ca, 16))
        # A worker that dies is replaced on the same socket; service goes on.
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(gw.pid)) == 2 and victim not in worker_pids(gw.pid))
        asyncio.run(round_trips(gw.url, gw.ca, 8))
        workers = worker_pids(gw.pid)
    finally:
        status = gw.stop()
    assert status == 0
    log = "".join(gw.output)
    served_by = {int(pid) for pid in PID_IN_LOG.findall(log)}
    # 24 connections from distinct ports: both workers served some (odds of not: 2**-15).
    assert len(served_by & (first | workers)) >= 2, log
    assert f"pid {victim}) exited" in log
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_workers_need_the_disk_store(tmp_path: Path) -> None:
    for extra in (["--store", "memory", "--workers", "2"], ["--workers", "0"]):
        result = run("serve", "--root", str(tmp_path), "--listen", "127.0.0.1:0", *extra)
        assert result.returncode == EXIT_USAGE
        assert b"--workers" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [2])
def test_uploads_in_progress_survive_another_worker_starting(tmp_path: Path, workers: int) -> None:
    """Crash recovery runs once, in the supervisor: a replaced worker does not delete the
    temporary files of uploads other workers are receiving."""
    gw = GatewayProcess(tmp_path / "root", extra=["--open", "--workers", str(workers)])
    gw.start()
    try:
        wait_for(lambda: len(worker_pids(gw.pid)) == workers)
        tmp_dir = tmp_path / "root" / "store" / "tmp"
        marker = tmp_dir / "upload-in-progress.part"
        marker.write_bytes(b"x")
        victim = sorted(worker_pids(gw.pid))[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(gw.pid)) == workers and victim not in worker_pids(gw.pid))
        asyncio.run(round_trips(gw.url, gw.ca, 2))
        assert marker.exists()
    finally:
        assert gw.stop() == 0
