"""Azurite (Microsoft's Azure Storage emulator, npm ``azurite``) for tests and benchmarks:
find or install it, run ``azurite-blob`` on 127.0.0.1 on a free port, stop it by PID.

Installed with ``npm install`` into ``<repo>/.cache/azurite/<version>/`` (gitignored), once;
``QUICSTORE_AZURITE_BLOB`` may name an ``azurite-blob`` executable to use instead. Version
3.35.0 is pinned: later ones declare Node 21+ while Debian 12 ships Node 18.

    with Azurite.start(tmp_dir) as azurite:
        store = AzureStore(AzureStoreConfig(azurite.connection_string))

Usage as a program: ``python -m tools.azurite --install`` (what CI runs), or with no flag
to start one and print its connection string until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tools.service_process import ServiceDidNotStart, start_http_service, stop_process_group

VERSION = "3.35.0"
"""The Azurite release installed (npm)."""
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "azurite" / VERSION
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's well-known development account and key (public; documented by Microsoft)."""
INSTALL_TIMEOUT = 600.0
"""Seconds ``npm install`` may take (about 60 s here)."""
START_TIMEOUT = 30.0
"""Seconds Azurite may take to answer its first request (about 2 s here)."""


class AzuriteUnavailable(RuntimeError):
    """Azurite is not installed and cannot be (no node or npm), or it failed to start."""


def find() -> Path | None:
    """The ``azurite-blob`` executable to use, if one is installed."""
    override = os.environ.get("QUICSTORE_AZURITE_BLOB")
    if override:
        return Path(override)
    cached = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if cached.exists():
        return cached
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def missing_tools() -> str | None:
    """Why Azurite cannot be installed or run here (no ``node``/``npm``), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} not found (CI installs nodejs and npm with apt)"
    return None


def ensure_installed() -> Path:
    """The ``azurite-blob`` executable, installed with npm into the cache on first use
    (serialised by a lock file, so concurrent callers install once)."""
    found = find()
    if found is not None:
        return found
    problem = missing_tools()
    if problem:
        raise AzuriteUnavailable(problem)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found is not None:
            return found
        try:
            done = subprocess.run(
                [
                    "npm",
                    "install",
                    "--prefix",
                    str(CACHE),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"azurite@{VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AzuriteUnavailable(f"npm install azurite@{VERSION} timed out") from None
        if done.returncode != 0:
            raise AzuriteUnavailable(
                f"npm install azurite@{VERSION} failed: {done.stderr.strip()[-500:]}"
            )
    found = find()
    if found is None:
        raise AzuriteUnavailable("npm install finished but azurite-blob is missing")
    return found


class Azurite:
    """One running ``azurite-blob`` process on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, location: Path, log: Path):
        self.proc = proc
        self.port = port
        """TCP port of the blob endpoint."""
        self.location = location
        """Folder of Azurite's data."""
        self.log = log

    @property
    def pid(self) -> int:
        """The Azurite process's ID."""
        return self.proc.pid

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint URL."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """An Azure Storage connection string for the emulator's account."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    @classmethod
    def launch(cls, location: Path, *, timeout: float = START_TIMEOUT) -> Azurite:
        """Start ``azurite-blob`` with its data under ``location`` on a free port and return
        once it answers HTTP (polled, bounded by ``timeout`` s). Retries another port if the
        probed one was taken meanwhile."""
        binary = ensure_installed()
        location.mkdir(parents=True, exist_ok=True)
        log = location / "azurite.log"

        def command(port: int) -> list[str]:
            return [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(location),
                "--disableTelemetry",
                "--silent",
            ]

        try:
            proc, port = start_http_service(
                command,
                log,
                probe_path=f"/{ACCOUNT}?comp=list",
                timeout=timeout,
                name="azurite-blob",
            )
        except ServiceDidNotStart as exc:
            raise AzuriteUnavailable(str(exc)) from None
        return cls(proc, port, location, log)

    @classmethod
    @contextlib.contextmanager
    def start(cls, location: Path, *, timeout: float = START_TIMEOUT) -> Iterator[Azurite]:
        """:meth:`launch`, stopped on exit."""
        azurite = cls.launch(location, timeout=timeout)
        try:
            yield azurite
        finally:
            azurite.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process's own group (node and nothing else), SIGKILL after
        ``timeout`` s."""
        stop_process_group(self.proc, timeout)


def main(argv: list[str] | None = None) -> int:
    """``--install``: install and print the path; else run one until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tools.azurite", description=__doc__)
    parser.add_argument("--install", action="store_true", help="install only")
    args = parser.parse_args(argv)
    try:
        binary = ensure_installed()
    except AzuriteUnavailable as exc:
        print(f"azurite: {exc}", file=sys.stderr)
        return 1
    if args.install:
        print(binary)
        return 0
    with tempfile.TemporaryDirectory() as tmp, Azurite.start(Path(tmp)) as azurite:
        print(azurite.connection_string, flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main())
