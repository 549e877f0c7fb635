"""Stateless gateways over one Azure Blob account (Azurite): three ``quicstore serve --store
azure`` processes, one client given all three URLs, one gateway SIGKILLed while responses
are in flight. The disk-store version of this test is
tests/client/test_client.py::test_three_gateways_one_killed_mid_run."""

from __future__ import annotations

from pathlib import Path

from tools.azurite import Azurite

from ..store.azurite import azurite, unique_prefix  # noqa: F401 (fixture)
from .gateway_failover import gateways_sharing_objects, get_all_while_one_gateway_dies


async def test_three_azure_gateways_one_killed_mid_run(
    tmp_path: Path,
    azurite: Azurite,  # noqa: F811
) -> None:
    """No error reaches the caller and every byte read back is the byte written; what one
    gateway wrote, the others serve (the account is the only state)."""
    root = tmp_path / "gateway"  # certificate only: the objects live in Azurite
    extra = [
        "--open",
        "--store",
        "azure",
        "--azure-connection-string",
        azurite.connection_string,
        "--azure-container-prefix",
        unique_prefix(),
    ]
    async with gateways_sharing_objects(root, extra) as (gateways, client, bodies):
        listed = [o.key async for page in client.list("shared") for o in page.entries]
        assert sorted(listed) == sorted(bodies)
        sinks = await get_all_while_one_gateway_dies(client, "shared", bodies, gateways[1])
        assert gateways[1].proc is not None and gateways[1].proc.poll() is not None
        for key, body in bodies.items():
            assert bytes(sinks[key].buffer) == body, key
        # The survivors keep serving, and a replaced object is seen by both at once.
        for key, body in bodies.items():
            assert await client.get("shared", key) == body
        await client.put("shared", "obj-0", b"replaced")
        for _ in range(4):  # requests alternate between the two survivors
            assert await client.get("shared", "obj-0") == b"replaced"
        survivors = [e for e in client.endpoints if e.port != gateways[1].port]
        assert all(e.session is not None and e.session.usable for e in survivors)
