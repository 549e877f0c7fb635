"""moto's S3 server for the tests: one ``python -m moto.server`` per test session, started on
127.0.0.1 on a free port as a child process in its own process group and stopped by its PID,
and a fresh bucket prefix per test so that tests never see each other's buckets.

tests/store/conftest.py registers the fixtures (``moto_server``, ``s3_store``) for the store
tests; tests elsewhere import them from here. Without moto or aiobotocore (the ``test`` and
``s3`` extras) they are skipped with that reason; CI installs both.

moto keeps everything in memory and checks no signature: any access key works, and the tests
pass explicit dummy keys so that botocore never looks further (no instance metadata).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.service_process import start_http_service, stop_process_group

START_TIMEOUT = 30.0
"""Seconds moto may take to answer its first request (about 1-2 s here: imports)."""
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
"""Dummy credentials (moto accepts any)."""
REGION = "us-east-1"


@dataclass
class MotoServer:
    """One running moto server process on 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, **kw: Any) -> Any:
        """An S3StoreConfig for this server with a fresh bucket prefix (``kw`` overrides)."""
        from quicstore.store.s3 import S3StoreConfig

        fields: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "bucket_prefix": unique_prefix(),
            "region": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
        }
        fields.update(kw)
        return S3StoreConfig(**fields)

    @classmethod
    def launch(cls, log: Path, *, timeout: float = START_TIMEOUT) -> MotoServer:
        """Start the server on a free port and return once it answers HTTP (polled, bounded
        by ``timeout`` s); another port if the probed one was taken meanwhile."""
        proc, port = start_http_service(
            lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            log,
            probe_path="/",
            timeout=timeout,
            name="moto server",
        )
        return cls(proc, port, log)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the server's own process group (started by us), SIGKILL after
        ``timeout`` s."""
        stop_process_group(self.proc, timeout)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A running moto S3 server for the whole session."""
    pytest.importorskip("moto.server", reason="moto[server] (the 'test' extra) is not installed")
    pytest.importorskip("aiobotocore", reason="the 's3' extra is not installed")
    server = MotoServer.launch(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


def unique_prefix() -> str:
    """A bucket-name prefix no other test uses (``t<8 hex>-``)."""
    return f"t{secrets.token_hex(4)}-"


@pytest.fixture
async def s3_store(moto_server: MotoServer) -> AsyncIterator[Any]:
    """An S3Store over the session's moto server with a prefix of its own."""
    from quicstore.store.s3 import S3Store

    store = await S3Store.connect(moto_server.config())
    yield store
    await store.close()
