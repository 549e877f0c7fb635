"""HTTPS static file server on aiohttp (FileResponse: Range supported), for the bench.

Usage::

    python -m tools.bench.servers.aiohttp_static --root DIR --cert C --key K \
        [--loop asyncio|uvloop] [--host 127.0.0.1] [--port 0]

Prints ``READY <port>`` once listening (port 0 binds a free port). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from pathlib import Path

from aiohttp import web


def make_app(root: Path) -> web.Application:
    """An app serving files under ``root`` at ``/<relative path>`` with FileResponse."""
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["tail"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{tail:.+}", handle)
    return app


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM or SIGINT."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    runner = web.AppRunner(make_app(Path(args.root)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ctx, backlog=512)
    await site.start()
    port = runner.addresses[0][1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
