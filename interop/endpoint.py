"""quicstore's endpoint for the interop suite (the contract of interop/contract.py).

    ROLE=server ... python -m interop.endpoint   # serve $WWW over hq-interop and h3
    ROLE=client ... python -m interop.endpoint   # fetch $REQUESTS into $DOWNLOADS

The server is the gateway itself (``quicstore.server``) with the files of ``WWW`` loaded into
a memory store and served at the root (``h3_root_bucket``), hq-interop and h3 offered, a
Retry for the ``retry`` test case, qlog in ``QLOGDIR``. The client is quicstore's HTTP/3 and
hq-interop client (``quicstore.client.http3``) on quicstore's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from urllib.parse import urlparse

from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import CipherSuite

from interop.contract import EXIT_UNSUPPORTED, EndpointEnv, unsupported, url_basename

SERVER_CASES = frozenset(
    {
        "handshake",
        "transfer",
        "multiplexing",
        "retry",
        "resumption",
        "zerortt",
        "http3",
        "chacha20",
        "keyupdate",
        "v2",
        "longrtt",
        "handshakeloss",
        "transferloss",
        "rangedget",
    }
)
CLIENT_CASES = SERVER_CASES
BUCKET = "www"

log = logging.getLogger("interop.endpoint")


async def run_server(env: EndpointEnv) -> int:
    from quicstore.server.app import start_gateway
    from quicstore.server.config import GatewayConfig

    if env.testcase not in SERVER_CASES:
        return unsupported(f"test case {env.testcase} is not implemented")
    root = env.logs / "gateway-root"
    config = GatewayConfig(
        root=root,
        host=env.host,
        port=env.port,
        cert_file=env.cert,
        key_file=env.key,
        store="memory",
        open_access=True,
        protocols=("hq-interop", "h3"),
        h3_root_bucket=BUCKET,
        retry=env.testcase == "retry",
        retry_threshold=None,
        qlog_dir=env.qlogdir,
        max_connections_per_address=None,
        idle_timeout=30.0,
    )
    running = await start_gateway(config)
    if env.keylog is not None:
        running.gateway.quic_configuration.secrets_log_file = env.keylog.open("a")
    store = running.gateway.store
    assert env.www is not None
    for path in sorted(env.www.rglob("*")):
        if path.is_file():
            writer = await store.create(
                BUCKET, path.relative_to(env.www).as_posix(), block_size=config.settings.block_size
            )
            await writer.write([path.read_bytes()])
            await writer.commit(sha256=None, content_length=None, condition=lambda etag: None)
    print(f"quicstore interop server ready on {env.host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(drain_timeout=2)
    return 0


async def _fetch(urls: list[str], env: EndpointEnv, **connect: object) -> object:
    """Fetch ``urls`` on one connection (concurrently); save each body; return the client."""
    from quicstore.client.http3 import Http3Client

    assert env.downloads is not None
    client = await Http3Client.connect(
        env.host,
        env.port,
        alpn=env.alpn,
        ca_file=env.ca,
        server_name="localhost",
        qlog_dir=env.qlogdir,
        key_log=connect.pop("key_log", None),
        **connect,
    )  # type: ignore[arg-type]
    if env.testcase == "keyupdate":
        client.request_key_update()  # before any request: the transfer uses the new keys
    headers = [("range", env.byte_range)] if env.byte_range else []
    limit = asyncio.Semaphore(64)

    async def one(url: str) -> None:
        async with limit:
            response = await client.get(urlparse(url).path, headers=headers)
        expected = 206 if env.byte_range else 200
        if env.alpn == "h3" and response.status != expected:
            raise RuntimeError(f"{url}: status {response.status}")
        (env.downloads / url_basename(url)).write_bytes(response.body)  # type: ignore[operator]

    await asyncio.gather(*(one(url) for url in urls))
    return client


async def run_client(env: EndpointEnv) -> int:
    if env.testcase not in CLIENT_CASES:
        return unsupported(f"test case {env.testcase} is not implemented")
    assert env.downloads is not None
    env.downloads.mkdir(parents=True, exist_ok=True)
    key_log = env.keylog.open("a") if env.keylog is not None else None
    options: dict[str, object] = {"key_log": key_log}
    if env.testcase == "chacha20":
        options["cipher_suites"] = [CipherSuite.CHACHA20_POLY1305_SHA256]
    if env.testcase == "v2":
        # Compatible version negotiation (RFC 9368): start with v1, offer v2.
        options["original_version"] = QuicProtocolVersion.VERSION_1
        options["versions"] = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
    urls = list(env.requests)
    try:
        if env.testcase in ("resumption", "zerortt"):
            first = await _fetch(urls[:1], env, **options)
            ticket = await first.wait_for_ticket()  # type: ignore[attr-defined]
            await first.close()  # type: ignore[attr-defined]
            if ticket is None:
                print("no session ticket received", file=sys.stderr)
                return 1
            second = await _fetch(
                urls[1:],
                env,
                session_ticket=ticket,
                wait_handshake=env.testcase != "zerortt",
                **options,
            )
            await second.close()  # type: ignore[attr-defined]
        elif env.testcase == "handshakeloss":
            for url in urls:  # one connection per file: many handshakes through the loss
                client = await _fetch([url], env, **options)
                await client.close()  # type: ignore[attr-defined]
        else:
            client = await _fetch(urls, env, **options)
            await client.close()  # type: ignore[attr-defined]
    finally:
        if key_log is not None:
            key_log.close()
    return 0


def main() -> int:
    env = EndpointEnv.from_environ()
    logging.basicConfig(
        level=logging.INFO,
        filename=str(env.logs / f"quicstore-{env.role}.log"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    if env.role == "server":
        return int(runner(run_server(env)))
    if env.role == "client":
        with contextlib.suppress(KeyboardInterrupt):
            return int(runner(asyncio.wait_for(run_client(env), timeout=300)))
        return 1
    print(f"unknown ROLE {env.role!r}", file=sys.stderr)
    return EXIT_UNSUPPORTED


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
