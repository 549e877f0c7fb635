"""hypercorn 0.18 serving a folder over HTTP/3, in-process, run by the peers venv's python.

The app is starlette's StaticFiles over ``--www`` (it answers Range with 206). hypercorn builds
aioquic's QuicConfiguration inside ``QuicProtocol.__init__``; this script wraps that constructor
only to add a qlog folder and a TLS key log. SIGTERM or SIGINT stop the server.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from aioquic.quic.logger import QuicFileLogger
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol import quic as hypercorn_quic
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


def instrument(qlog: str | None, keylog: str | None) -> None:
    """Give every QuicProtocol's configuration a qlog folder and a key log file."""
    original = hypercorn_quic.QuicProtocol.__init__
    logger = QuicFileLogger(qlog) if qlog else None
    secrets = open(keylog, "a", buffering=1) if keylog else None  # noqa: SIM115

    def init(self: hypercorn_quic.QuicProtocol, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        if logger is not None:
            self.quic_config.quic_logger = logger
        if secrets is not None:
            self.quic_config.secrets_log_file = secrets

    hypercorn_quic.QuicProtocol.__init__ = init  # type: ignore[method-assign]


def free_tcp_port(host: str) -> int:
    """A TCP port that was free a moment ago (hypercorn also needs a TCP bind)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def main(args: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT."""
    instrument(args.qlog, args.keylog)
    app = Starlette(routes=[Mount("/", StaticFiles(directory=args.www))])
    config = Config()
    config.bind = [f"{args.host}:{free_tcp_port(args.host)}"]
    config.quic_bind = [f"{args.host}:{args.port}"]
    config.certfile = args.cert
    config.keyfile = args.key
    config.accesslog = "-"
    config.errorlog = "-"
    config.graceful_timeout = 0.5  # s: on SIGTERM, do not wait long for open connections
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="UDP port for HTTP/3")
    parser.add_argument("--www", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--qlog")
    parser.add_argument("--keylog")
    asyncio.run(main(parser.parse_args()))
