"""Shared fixtures: a loopback gateway (in-process) and clients that trust it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quicstore.client.client import Client
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """An open-access gateway on a disk store under tmp_path, on a free loopback port."""
    running = await start_gateway(GatewayConfig(root=tmp_path / "gw", port=0, open_access=True))
    yield running
    await running.stop(drain_timeout=2)


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[Client]:
    """A client verifying the gateway's generated certificate."""
    async with Client(gateway.url, ca_file=gateway.tls.cert_file) as c:
        yield c
