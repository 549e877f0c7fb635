"""Shared fixtures: a loopback gateway (in-process) and clients that trust it, on each
packet-protection path (native and pure Python)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quicstore.client.client import Client
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.transport import compat


@pytest.fixture(params=["native", "python"])
def packet_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Connections opened while this is active protect packets on the named path
    (quicstore._native or aioquic's Python one). The native one is skipped where the
    extension was not built, unless QUICSTORE_NATIVE=1 says it must be there."""
    native = request.param == "native"
    if native and compat.native_unavailable_reason():
        if os.environ.get(compat.NATIVE_SETTING) == "1":
            pytest.fail(f"QUICSTORE_NATIVE=1 but {compat.native_unavailable_reason()}")
        pytest.skip(f"quicstore._native not built: {compat.native_unavailable_reason()}")
    before = compat.native_packet_path()
    compat.use_native_packet_path(native)
    yield request.param
    compat.use_native_packet_path(before)


@pytest.fixture
async def gateway(tmp_path: Path, packet_path: str) -> AsyncIterator[RunningGateway]:
    """An open-access gateway on a disk store under tmp_path, on a free loopback port (with
    its clients, on the packet path of ``packet_path``)."""
    running = await start_gateway(GatewayConfig(root=tmp_path / "gw", port=0, open_access=True))
    yield running
    await running.stop(drain_timeout=2)


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[Client]:
    """A client verifying the gateway's generated certificate."""
    async with Client(gateway.url, ca_file=gateway.tls.cert_file) as c:
        yield c
