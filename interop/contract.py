"""The endpoint contract shared by quicstore's endpoint and every peer adapter.

An implementation is a command run with these environment variables (as in the QUIC interop
runner, with local processes instead of containers):

``ROLE``            ``server`` or ``client``
``TESTCASE``        a test case name (``interop.testcases``)
``HOST``, ``PORT``  ``127.0.0.1`` and the UDP port (server: to listen on; client: to connect to)
``WWW``             server: folder of the files to serve (``/<name>`` is ``$WWW/<name>``)
``DOWNLOADS``       client: folder to save each downloaded file into, under its URL's basename
``REQUESTS``        client: space-separated ``https://127.0.0.1:PORT/<name>`` URLs
``CERTS``           folder with ``cert.pem``, ``priv.key`` (the leaf, SAN 127.0.0.1/localhost)
                    and ``ca.pem`` (the CA that signed it)
``QLOGDIR``         folder to write qlog files into
``SSLKEYLOGFILE``   file to append TLS secrets to (NSS key log format)
``LOGS``            folder for any other log the endpoint writes

Two extensions of the runner's contract, set for every test case:

``ALPN``            the ALPN the driver picked for this pair (``hq-interop`` or ``h3``)
``RANGE``           rangedget only: the ``Range`` header value to send (``bytes=FIRST-LAST``);
                    the client saves the 206 body (exactly those bytes) under the basename

Exit codes: 0 success (a client: all REQUESTS downloaded), 127 unsupported test case, anything
else is a failure. A server is ready once it holds its UDP port and runs until SIGTERM.

How REQUESTS map onto connections depends on the test case (``TestCase.connections``):
``one`` - all on one connection; ``resume`` - the first URL on a first connection, the others on
a second connection that resumes the first one's session (zerortt: sent as 0-RTT);
``each`` - one connection per URL (handshakeloss).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

EXIT_UNSUPPORTED = 127
"""Exit code of an endpoint asked for a test case it does not support."""

INTEROP_DIR = Path(__file__).resolve().parent
"""The ``interop/`` package folder."""

REPO_DIR = INTEROP_DIR.parent
"""The repository root (cwd for ``python -m interop...`` commands)."""

CACHE_DIR = INTEROP_DIR / ".cache"
"""Run-time downloads and peer environments (git-ignored)."""

PEERS_VENV = CACHE_DIR / "venv-peers"
"""Virtual environment with aioquic 1.7.2 (+ starlette, jinja2, wsproto), qh3 and hypercorn."""

NIQUESTS_VENV = CACHE_DIR / "venv-niquests"
"""niquests' own virtual environment (it replaces urllib3 with urllib3-future on start-up)."""

PROJECT_PYTHON = Path(sys.executable)
"""The interpreter running the driver (the project venv's python)."""

AIOQUIC_VERSION = "1.7.2"
"""The aioquic release whose sdist ``examples/`` serve as a peer."""


def venv_python(venv: Path) -> Path:
    """``bin/python`` of a virtual environment."""
    return venv / "bin" / "python"


@dataclasses.dataclass(frozen=True)
class Support:
    """Whether an adapter supports a test case in a role, and why not when it does not."""

    ok: bool
    reason: str = ""

    @staticmethod
    def yes() -> Support:
        """Supported."""
        return Support(True)

    @staticmethod
    def no(reason: str) -> Support:
        """Unsupported, with a reason that is true of the peer."""
        return Support(False, reason)


@dataclasses.dataclass(frozen=True)
class EndpointEnv:
    """The contract's variables, parsed (see the module docstring)."""

    role: str
    testcase: str
    host: str
    port: int
    certs: Path
    qlogdir: Path | None
    keylog: Path | None
    logs: Path
    alpn: str
    www: Path | None = None
    downloads: Path | None = None
    requests: tuple[str, ...] = ()
    byte_range: str | None = None

    @staticmethod
    def from_environ(environ: Mapping[str, str] | None = None) -> EndpointEnv:
        """Read the contract's variables from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "")
            return Path(value) if value else None

        logs = path("LOGS") or Path.cwd()
        logs.mkdir(parents=True, exist_ok=True)
        return EndpointEnv(
            role=env["ROLE"],
            testcase=env["TESTCASE"],
            host=env.get("HOST", "127.0.0.1"),
            port=int(env["PORT"]),
            certs=Path(env["CERTS"]),
            qlogdir=path("QLOGDIR"),
            keylog=path("SSLKEYLOGFILE"),
            logs=logs,
            alpn=env.get("ALPN", "h3"),
            www=path("WWW"),
            downloads=path("DOWNLOADS"),
            requests=tuple(env.get("REQUESTS", "").split()),
            byte_range=env.get("RANGE") or None,
        )

    @property
    def cert(self) -> Path:
        """The leaf certificate (PEM)."""
        return self.certs / "cert.pem"

    @property
    def key(self) -> Path:
        """The leaf's private key (PEM)."""
        return self.certs / "priv.key"

    @property
    def ca(self) -> Path:
        """The CA certificate (PEM)."""
        return self.certs / "ca.pem"


def url_basename(url: str) -> str:
    """The file name a client saves ``url`` under (its path's last component)."""
    return os.path.basename(urlparse(url).path) or "index.html"


def write_certs(folder: Path, now: datetime.datetime | None = None) -> Path:
    """Create ``ca.pem``, ``cert.pem`` and ``priv.key`` (leaf for 127.0.0.1, ::1, localhost,
    signed by the CA) in ``folder`` with ``quicstore.certs``; returns ``folder``."""
    from quicstore.certs import generate_ca, issue_certificate

    now = now or datetime.datetime.now(datetime.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = generate_ca(now=now, common_name="quicstore interop CA")
    cert, key = issue_certificate(ca_cert, ca_key, now=now, hosts=["127.0.0.1", "::1", "localhost"])
    (folder / "ca.pem").write_bytes(ca_cert)
    (folder / "ca.key").write_bytes(ca_key)
    (folder / "cert.pem").write_bytes(cert)
    (folder / "priv.key").write_bytes(key)
    return folder


def unsupported(reason: str) -> int:
    """Print why a test case is unsupported (stderr) and return ``EXIT_UNSUPPORTED``."""
    print(f"unsupported: {reason}", file=sys.stderr, flush=True)
    return EXIT_UNSUPPORTED
