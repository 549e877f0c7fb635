"""Azurite for the tests: one ``azurite-blob`` per test session (tools/azurite.py starts it on
127.0.0.1 on a free port and stops it by PID), and a fresh container prefix per test so that
tests never see each other's containers.

Tests that need it import the fixtures: ``from tests.store.azurite import azurite,
azure_store``. Without ``node``/``npm`` they are skipped with that reason; CI installs both.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from tools.azurite import Azurite, missing_tools


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite blob service for the whole session (installed on first use)."""
    problem = missing_tools()
    if problem:
        pytest.skip(f"Azurite needs Node.js: {problem}")
    pytest.importorskip("azure.storage.blob", reason="the 'azure' extra is not installed")
    with Azurite.start(tmp_path_factory.mktemp("azurite")) as running:
        yield running


def unique_prefix() -> str:
    """A container-name prefix no other test uses (``t<8 hex>-``)."""
    return f"t{secrets.token_hex(4)}-"


@pytest.fixture
async def azure_store(azurite: Azurite) -> AsyncIterator[object]:
    """An AzureStore over the session's Azurite with a prefix of its own."""
    from quicstore.store.azure import AzureStore, AzureStoreConfig

    store = await AzureStore.connect(
        AzureStoreConfig(azurite.connection_string, container_prefix=unique_prefix())
    )
    yield store
    await store.close()
