"""Assembling and running a gateway: store, credentials, TLS, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth import Authorizer
from ..proto.codes import ALPN
from ..store.base import Store
from ..store.disk import DiskStore
from ..store.memory import MemoryStore
from ..transport import compat, memory
from .config import GatewayConfig
from .gateway import Gateway, build_quic_configuration
from .state import TlsFiles, ensure_certificate, load_secrets

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger("quicstore.gateway")


@dataclass
class RunningGateway:
    """A started gateway and what a client needs to reach it."""

    gateway: Gateway
    host: str
    port: int
    tls: TlsFiles
    metrics: MetricsServer | None = None
    """The Prometheus endpoint, if ``config.metrics_listen`` asked for one."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"quicstore://{host}:{self.port}"

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Graceful shutdown, then release the store (and the metrics port)."""
        await self.gateway.shutdown(drain_timeout)
        await self.gateway.store.close()
        if self.metrics is not None:
            await self.metrics.close()


async def open_store(config: GatewayConfig, *, recover: bool = True) -> Store:
    """The store the configuration names (``recover``: clean up after a crash, which only
    the first process to open a shared store may do)."""
    if config.store == "memory":
        return MemoryStore()
    if config.store == "disk":
        return await DiskStore.open_at(
            config.root, io_threads=config.io_threads, durable=config.durable, recover=recover
        )
    if config.store == "azure":
        return await _open_azure_store(config)
    if config.store == "s3":
        return await _open_s3_store(config)
    raise ValueError(f"unknown store {config.store!r} (disk, memory, azure or s3)")


async def _open_s3_store(config: GatewayConfig) -> Store:
    """The S3 store (stateless: nothing to recover). ValueError without the ``s3`` extra,
    for a malformed option or without credentials; ConnectionError if S3 does not answer."""
    try:
        from ..store.s3 import S3Store, S3StoreConfig
    except ImportError as exc:
        raise ValueError(
            f"the s3 store needs the 's3' extra: pip install 'quicstore[s3]' ({exc})"
        ) from None
    return await S3Store.connect(
        S3StoreConfig(
            endpoint_url=config.s3_endpoint_url,
            bucket_prefix=config.s3_bucket_prefix,
            region=config.s3_region,
        )
    )


async def _open_azure_store(config: GatewayConfig) -> Store:
    """The Azure Blob store (stateless: nothing to recover). ValueError without a connection
    string or the ``azure`` extra; ConnectionError if the account does not answer."""
    if not config.azure_connection_string:
        raise ValueError(
            "the azure store needs a connection string "
            "(--azure-connection-string or $QUICSTORE_AZURE_CONNECTION_STRING)"
        )
    try:
        from ..store.azure import AzureStore, AzureStoreConfig
    except ImportError as exc:
        raise ValueError(
            f"the azure store needs the 'azure' extra: pip install 'quicstore[azure]' ({exc})"
        ) from None
    return await AzureStore.connect(
        AzureStoreConfig(
            config.azure_connection_string, container_prefix=config.azure_container_prefix
        )
    )


def build_authorizer(config: GatewayConfig) -> Authorizer:
    """Token secrets from the root (created on first start) and public buckets."""
    if config.open_access:
        return Authorizer(open_access=True)
    secrets = load_secrets(config.root, config.secrets_file, create=True)
    public = {bucket: frozenset({"read", "list"}) for bucket in config.public_buckets}
    return Authorizer(secrets=secrets, public=public)


async def start_gateway(
    config: GatewayConfig,
    *,
    sock: socket.socket | None = None,
    recover: bool = True,
    metrics_sock: socket.socket | None = None,
    worker: int | None = None,
) -> RunningGateway:
    """Open the store, load or create credentials and certificate, and listen (on ``sock``,
    already bound, if given: a worker's share of the port). With ``config.metrics_listen``
    also serve Prometheus metrics (on ``metrics_sock``, already listening, if given;
    ``worker``: the worker's index, a label)."""
    config.root.mkdir(parents=True, exist_ok=True)
    tls = ensure_certificate(config.root, config.cert_file, config.key_file)
    authorizer = build_authorizer(config)
    quic_config = build_quic_configuration(config, str(tls.cert_file), str(tls.key_file))
    store = await open_store(config, recover=recover)
    gateway = Gateway(config, store, authorizer, quic_config)
    try:
        host, port = await gateway.start(sock)
    except BaseException:
        await store.close()
        raise
    running = RunningGateway(gateway, host, port, tls)
    if config.metrics_listen is not None or metrics_sock is not None:
        from .metrics import MetricsServer, build_registry

        running.metrics = MetricsServer(build_registry(gateway, worker))
        try:
            await running.metrics.start(*(config.metrics_listen or ("", 0)), sock=metrics_sock)
        except BaseException:
            running.metrics = None
            await running.stop(drain_timeout=0)
            raise
    return running


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (each GET in flight holds two file
    descriptors); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


async def serve_forever(
    config: GatewayConfig,
    announce: Callable[[str], None] = print,
    *,
    sock: socket.socket | None = None,
    recover: bool = True,
    metrics_sock: socket.socket | None = None,
    worker: int | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully. Returns an exit status.
    ``sock``, ``recover``, ``metrics_sock`` and ``worker``: see :func:`start_gateway`
    (workers pass them)."""
    raise_open_file_limit()
    memory.tune_allocator()
    memory.tune_gc()
    running = await start_gateway(
        config, sock=sock, recover=recover, metrics_sock=metrics_sock, worker=worker
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        try:
            running.gateway.reload_secrets(build_authorizer(config))
            log.info("token secrets reloaded")
        except (OSError, ValueError, KeyError) as exc:
            log.error("token secrets not reloaded: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if running.metrics is not None:
        announce(f"metrics: {running.metrics.url}")
    announce(
        f"quicstore gateway listening on {running.url} (ALPN {ALPN}), store {config.store}"
        f" at {config.root}"
    )
    announce(
        f"certificate sha256 fingerprint: {running.tls.fingerprint}"
        + (" (generated)" if running.tls.generated else "")
    )
    if compat.native_packet_path():
        announce("packet protection: native (quicstore._native)")
    else:
        reason = compat.native_unavailable_reason() or f"{compat.NATIVE_SETTING}=0"
        announce(f"packet protection: pure Python ({reason})")
    if config.open_access:
        announce("WARNING: open access: requests need no token")
    else:
        announce(
            f"tokens: quicstore token create --root {config.root} --scope BUCKET "
            "--ops read,list --ttl 1h"
        )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        announce("shutting down: finishing in-flight requests")
        await running.stop()
        announce(f"stopped; counters: {running.gateway.metrics.snapshot()}")
    return 0
