"""Crashes: a gateway killed with SIGKILL mid-PUT and mid-GET, then restarted."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

import quicstore
from quicstore.client.client import Client

from .serverproc import GatewayProcess

MIB = 1024 * 1024


async def wait_until(predicate: object, timeout: float = 30.0) -> None:
    """Poll a condition (the thing observed lives in another process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def temp_files(root: Path) -> list[Path]:
    return (
        [p for p in (root / "store" / "tmp").iterdir()] if (root / "store" / "tmp").exists() else []
    )


@pytest.mark.parametrize("had_previous_version", [False, True])
async def test_sigkill_mid_put_leaves_no_torn_object(
    tmp_path: Path, had_previous_version: bool
) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    previous = os.urandom(100_000)
    try:
        async with Client(gw.url, ca_file=gw.ca, max_attempts=1) as c:
            if had_previous_version:
                await c.put("data", "k", previous)
            upload = asyncio.ensure_future(c.put("data", "k", os.urandom(64 * MIB)))
            # The gateway is streaming the body into a temporary file: kill it now.
            await wait_until(
                lambda: (
                    any(p.stat().st_size > MIB for p in temp_files(tmp_path) if p.exists())
                    or upload.done()
                )
            )
            assert not upload.done()
            gw.kill()
            with pytest.raises(quicstore.ConnectionFailed):
                await upload
    finally:
        gw.kill()
    restarted = GatewayProcess(tmp_path, port=gw.port, extra=["--open"]).start()
    try:
        assert temp_files(tmp_path) == []
        async with Client(restarted.url, ca_file=restarted.ca) as c:
            if had_previous_version:
                assert await c.get("data", "k") == previous
            else:
                with pytest.raises(quicstore.NotFound):
                    await c.stat("data", "k")
        objects = list((tmp_path / "store" / "data").rglob("*.obj"))
        assert len(objects) == (1 if had_previous_version else 0)
    finally:
        assert restarted.stop() == 0


async def test_download_resumes_after_the_gateway_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    body = os.urandom(24 * MIB)
    received = 0
    restarted: GatewayProcess | None = None
    try:
        async with Client(
            gw.url, ca_file=gw.ca, max_attempts=12, backoff=0.1, max_backoff=1.0
        ) as c:
            await c.put("data", "big", body)

            def progress(n: int) -> None:
                nonlocal received
                received += n

            download = asyncio.ensure_future(c.get_with_info("data", "big", progress=progress))
            await wait_until(lambda: received > 4 * MIB or download.done())
            assert not download.done()
            gw.kill()
            restarted = GatewayProcess(tmp_path, port=gw.port, extra=["--open"]).start()
            result, data = await asyncio.wait_for(download, timeout=120)
            assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()
            assert result.attempts >= 2
    finally:
        gw.kill()
        if restarted is not None:
            assert restarted.stop() == 0
