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

import contextlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0
"""Seconds moto may take to answer its first request (about 1-2 s here: imports)."""
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
"""Dummy credentials (moto accepts any)."""
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


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
        last = ""
        for _ in range(3):
            port = _free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            server = cls(proc, port, log)
            deadline = time.monotonic() + timeout
            delay = 0.01
            while time.monotonic() < deadline and proc.poll() is None:
                if _answers(port):
                    return server
                time.sleep(delay)  # polling interval, not synchronisation
                delay = min(delay * 2, 0.2)
            server.stop()
            last = log.read_text(errors="replace")[-500:]
        raise RuntimeError(f"moto server did not start: {last}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the server's own process group (started by us), SIGKILL after
        ``timeout`` s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)


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
