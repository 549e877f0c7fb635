"""The async client SDK: one connection reused across calls, typed errors, verified reads.

async with quicstore.Client("quicstore://127.0.0.1:4433", token=..., ca_file=...) as c:
    await c.put("data", "shards/0001.tar", b"...")
    blob = await c.get("data", "shards/0001.tar")
    async for page in c.list("data", prefix="shards/"):
        ...
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import os
import ssl
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from aioquic.quic.configuration import QuicConfiguration

from ..errors import ConnectionFailed, QuicstoreError, RequestFailed
from ..plan.prefetch import PrefetchConfig
from ..proto.codes import ALPN, ErrorCode
from ..proto.frames import Buffer
from ..proto.messages import Listing, RequestHeader, ResponseHeader, Trailer
from ..store.base import ListPage, ObjectInfo
from ..transport import compat, memory
from ..transport.endpoint import connect_quic, paced_quic_factory
from .fanout import FanoutGet, GetResult
from .session import ClientSession
from .sinks import FileSink, MemorySink, Sink
from .tls import read_ca_file

log = logging.getLogger("quicstore.client")
MIB = 1024 * 1024
DEFAULT_PORT = 4433


class InsecureConnectionWarning(UserWarning):
    """A connection was made without verifying the gateway's certificate."""


@dataclass(frozen=True)
class ClientConfig:
    """How a client connects and reads. Sizes in bytes, times in seconds."""

    token: str | None = None
    """Bearer token; default: the QUICSTORE_TOKEN environment variable."""
    ca_file: Path | None = None
    """CA certificates (PEM) that the gateway's certificate must chain to."""
    pin: str | None = None
    """SHA-256 fingerprint (hex) the gateway's certificate must have (a self-signed one)."""
    client_cert: Path | None = None
    """Certificate chain (PEM) to present to a gateway that requires mutual TLS."""
    client_key: Path | None = None
    """Private key (PEM) of ``client_cert``."""
    insecure: bool = False
    """Skip certificate verification (warns on every connection). For experiments only."""
    server_name: str | None = None
    """Name to verify the certificate against; default: the host."""
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    """Fan-out: part size and how many parts may be outstanding."""
    stream_window: int = 4 * MIB
    """Largest receive window per stream, bytes: what a part may have in flight. Windows
    start at 256 KiB and double while the application uses them within two round trips
    (they follow the bandwidth-delay product), up to this."""
    connection_window: int = 64 * MIB
    """Receive window per connection."""
    connect_timeout: float = 10.0
    """Seconds to complete the handshake."""
    max_attempts: int = 5
    """Connections a transfer may use (1 + reconnects) before failing."""
    backoff: float = 0.2
    """First reconnect delay; doubles up to ``max_backoff``."""
    max_backoff: float = 3.0
    integrity_retries: int = 2
    """Times a range failing its checksum is fetched again before IntegrityError."""
    verify_sha256: bool = False
    """Also check the whole-object SHA-256 when a whole object is read into memory."""
    max_datagram_size: int | None = None
    """Cap on the UDP payload sent, bytes; None: as large as the route's MTU allows."""
    pmtu_discovery: bool = True
    """Start at 1200-byte datagrams and probe for larger ones (RFC 8899)."""
    batched_io: bool = True
    """quicstore's own UDP transport (batched, GSO/GRO where offered); False: the event
    loop's."""
    idle_timeout: float = 60.0
    silence_timeout: float = 10.0
    """Seconds without a datagram from the gateway, while requests wait, before the
    connection is declared dead and transfers resume on a new one."""
    put_chunk: int = 256 * 1024
    """Bytes per DATA frame when uploading."""
    put_buffer: int = 4 * MIB
    """Bytes an upload may queue in QUIC's send buffer before it waits for ACKs."""
    tune_allocator: bool = True
    """Keep glibc from handing back, and page-faulting in again, the receive buffers of
    every batch of datagrams (process-wide malloc settings, once: see
    :func:`quicstore.transport.memory.tune_client_allocator`; up to 32 MiB of free heap is
    kept for reuse). False: leave the process's malloc settings alone."""


def parse_endpoints(urls: str | Sequence[str]) -> builtins.list[tuple[str, int]]:
    """The gateways a client may use: one URL, several comma-separated hosts in one URL
    (``quicstore://a:4433,b:4433``) or a list of URLs. Path parts are ignored."""
    if isinstance(urls, str):
        parts = urlsplit(urls if "://" in urls else f"quicstore://{urls}")
        if parts.scheme != "quicstore":
            raise ValueError(f"not a quicstore:// URL: {urls!r}")
        hosts = [h for h in parts.netloc.split(",") if h]
        urls = [f"quicstore://{h}" for h in hosts] or [urls]
    endpoints = [parse_url(url)[:2] for url in urls]
    if not endpoints:
        raise ValueError("no gateway given")
    return endpoints


@dataclass
class _Endpoint:
    """One gateway the client may use, its connection, and its health."""

    host: str
    port: int
    session: ClientSession | None = None
    connecting: asyncio.Lock | None = None
    failures: int = 0
    """Consecutive failed connection attempts."""
    down_until: float = 0.0
    """Loop time before which it is skipped (after failures; 0: healthy)."""
    requests: int = 0
    """Connections handed out for requests (a spread measure)."""


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``quicstore://host:port[/bucket[/key]]`` -> (host, port, bucket, key). With several
    gateways (``quicstore://a:1,b:2/bucket/key``) the first is returned."""
    parts = urlsplit(url if "://" in url else f"quicstore://{url}")
    if parts.scheme != "quicstore":
        raise ValueError(f"not a quicstore:// URL: {url!r}")
    first = parts.netloc.split(",")[0]
    try:
        gateway = urlsplit(f"quicstore://{first}")
        host, port = gateway.hostname, gateway.port
    except ValueError as exc:
        raise ValueError(f"bad gateway address in {url!r}: {exc}") from None
    if not host:
        raise ValueError(f"no host in {url!r}")
    path = parts.path.lstrip("/")
    bucket, _, key = path.partition("/")
    return host, port or DEFAULT_PORT, bucket or None, key or None


class Client:
    """An async quicstore client for one gateway or several. Keeps one connection per
    gateway and reconnects when it breaks. With several gateways (stateless, in front of
    one store), requests are spread over them in turn, and a gateway that fails to connect
    or drops a request is skipped for a while (doubling up to ``max_backoff``) while the
    request goes on at another. Methods raise :mod:`quicstore.errors` exceptions carrying
    the spec's codes."""

    def __init__(
        self,
        url: str | Sequence[str] = f"quicstore://127.0.0.1:{DEFAULT_PORT}",
        config: ClientConfig | None = None,
        **overrides: object,
    ) -> None:
        """``url``: ``quicstore://host:port``, ``quicstore://host:port,host2:port2`` or a
        list of such URLs. ``overrides``: ClientConfig fields."""
        config = config or ClientConfig()
        if overrides:
            config = replace(config, **overrides)  # type: ignore[arg-type]
        if config.token is None and os.environ.get("QUICSTORE_TOKEN"):
            config = replace(config, token=os.environ["QUICSTORE_TOKEN"])
        self.config = config
        if config.tune_allocator:
            memory.tune_client_allocator()
        self.endpoints = [_Endpoint(host, port) for host, port in parse_endpoints(url)]
        """The gateways, in the order given."""
        self.host, self.port = self.endpoints[0].host, self.endpoints[0].port
        self._next = 0
        self._transports: builtins.list[asyncio.DatagramTransport] = []
        self.connections_made = 0

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection management

    def _quic_configuration(self, host: str) -> QuicConfiguration:
        cfg = self.config
        quic = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name=cfg.server_name or host,
            max_datagram_size=cfg.max_datagram_size or 1200,
            idle_timeout=cfg.idle_timeout,
            max_data=cfg.connection_window,
            # Streams start small; the window then follows the consumption rate up to
            # stream_window (compat.tuned_window).
            max_stream_data=min(cfg.stream_window, compat.AUTOTUNE_START),
            congestion_control_algorithm="cubic",
        )
        if cfg.client_cert is not None:
            quic.load_cert_chain(str(cfg.client_cert), str(cfg.client_key or cfg.client_cert))
        if cfg.insecure or cfg.pin:
            quic.verify_mode = ssl.CERT_NONE
        elif cfg.ca_file is not None:
            quic.load_verify_locations(cadata=read_ca_file(cfg.ca_file))
        return quic

    @property
    def _session(self) -> ClientSession | None:
        """The first gateway's connection (what a single-gateway client uses)."""
        return self.endpoints[0].session

    async def connect(self) -> ClientSession:
        """A usable connection to the next healthy gateway, opening one if needed."""
        return await self._connect(self._pick())

    def _pick(self) -> _Endpoint:
        """The next gateway in turn that is not being skipped (or, if all are, the one
        that comes back first)."""
        now = asyncio.get_running_loop().time()
        count = len(self.endpoints)
        for step in range(count):
            endpoint = self.endpoints[(self._next + step) % count]
            if endpoint.down_until <= now:
                self._next = (self._next + step + 1) % count
                return endpoint
        return min(self.endpoints, key=lambda e: e.down_until)

    async def _connect(self, endpoint: _Endpoint) -> ClientSession:
        if endpoint.session is not None and endpoint.session.usable:
            endpoint.requests += 1
            return endpoint.session
        if endpoint.connecting is None:
            endpoint.connecting = asyncio.Lock()
        async with endpoint.connecting:
            if endpoint.session is None or not endpoint.session.usable:
                try:
                    endpoint.session = await self._open(endpoint.host, endpoint.port)
                except ConnectionFailed:
                    self._mark_down(endpoint)
                    raise
                endpoint.failures = 0
                endpoint.down_until = 0.0
            endpoint.requests += 1
            return endpoint.session

    def _mark_down(self, endpoint: _Endpoint) -> None:
        endpoint.failures += 1
        if len(self.endpoints) > 1:
            pause = min(self.config.max_backoff, self.config.backoff * 2**endpoint.failures)
            endpoint.down_until = asyncio.get_running_loop().time() + pause
            log.info(
                "gateway %s:%d unreachable; skipping it for %.1fs",
                endpoint.host,
                endpoint.port,
                pause,
            )

    async def _open(self, host: str, port: int) -> ClientSession:
        cfg = self.config
        if cfg.insecure:
            warnings.warn(
                f"connecting to {host}:{port} without verifying its certificate",
                InsecureConnectionWarning,
                stacklevel=3,
            )
        sessions: builtins.list[ClientSession] = []

        def make_handler(driver: object) -> ClientSession:
            session = ClientSession(driver)  # type: ignore[arg-type]
            sessions.append(session)
            return session

        try:
            driver, transport = await asyncio.wait_for(
                connect_quic(
                    host,
                    port,
                    self._quic_configuration(host),
                    make_handler,
                    quic_factory=paced_quic_factory(cfg.stream_window, cfg.connection_window),
                    datagram_cap=cfg.max_datagram_size,
                    silence_timeout=cfg.silence_timeout,
                    batched_io=cfg.batched_io,
                    pmtu_discovery=cfg.pmtu_discovery,
                ),
                timeout=cfg.connect_timeout,
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {reason}") from None
        self._transports.append(transport)
        session = sessions[0]
        if cfg.pin:
            der = compat.peer_certificate_der(driver.quic)
            seen = hashlib.sha256(der).hexdigest() if der else "none"
            if seen != cfg.pin.lower().replace(":", ""):
                await session.close()
                raise ConnectionFailed(
                    f"{host}:{port} presented certificate {seen}, not the pinned one"
                )
        self.connections_made += 1
        return session

    async def _session_for_attempt(self, attempt: int) -> ClientSession:
        """A usable connection for a request's ``attempt``-th try. A retry goes to the next
        gateway in turn; only when every gateway fails does it back off and try again."""
        last: ConnectionFailed | None = None
        for _ in range(len(self.endpoints)):
            try:
                return await self._connect(self._pick())
            except ConnectionFailed as exc:
                last = exc
        if attempt >= self.config.max_attempts:
            assert last is not None
            if len(self.endpoints) == 1:
                raise last
            raise ConnectionFailed(
                f"no gateway reachable after {attempt} attempts (last: {last})"
            ) from None
        delay = min(self.config.max_backoff, self.config.backoff * 2 ** (attempt - 1))
        await asyncio.sleep(delay)  # backoff between reconnects, not synchronization
        return await self._session_for_attempt(attempt + 1)

    async def close(self) -> None:
        """Close the connections."""
        for endpoint in self.endpoints:
            if endpoint.session is not None:
                await endpoint.session.close()
                endpoint.session = None
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    # -- simple requests

    def _header(self, **fields: object) -> RequestHeader:
        return RequestHeader(token=self.config.token, **fields)  # type: ignore[arg-type]

    async def _simple(self, header: RequestHeader, retry: bool = True) -> ResponseHeader | Listing:
        attempt = 1
        while True:
            session = await self._session_for_attempt(attempt)
            call = session.start(header)
            try:
                response = await call.response
                await call.done
                return response
            except ConnectionFailed:
                if not retry or attempt >= self.config.max_attempts:
                    raise
                attempt += 1

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Metadata of the current version (HEAD)."""
        header = await self._simple(self._header(op="HEAD", bucket=bucket, key=key))
        assert isinstance(header, ResponseHeader)
        return _info(bucket, key, header)

    async def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> str:
        """Delete the current version; returns the ETag deleted."""
        header = await self._simple(
            self._header(op="DELETE", bucket=bucket, key=key, if_match=if_match), retry=False
        )
        assert isinstance(header, ResponseHeader)
        return header.etag or ""

    async def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[ListPage]:
        """Pages of keys under ``prefix`` in byte order (follows continuation tokens)."""
        token: str | None = None
        while True:
            listing = await self._simple(
                self._header(
                    op="LIST",
                    bucket=bucket,
                    prefix=prefix or None,
                    delimiter=delimiter,
                    continuation=token,
                    limit=limit,
                )
            )
            assert isinstance(listing, Listing)
            yield ListPage(
                entries=[
                    ObjectInfo(
                        bucket=bucket,
                        key=e.key,
                        size=e.size,
                        etag=e.etag,
                        mtime_ns=e.mtime_ns,
                        block_size=0,
                        sha256=b"",
                    )
                    for e in listing.entries
                ],
                prefixes=list(listing.prefixes),
                next=listing.next,
            )
            token = listing.next
            if token is None:
                return

    async def list_all(self, bucket: str, *, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object under ``prefix``."""
        return [e async for page in self.list(bucket, prefix=prefix) for e in page.entries]

    # -- GET

    def _fanout(
        self,
        bucket: str,
        key: str,
        offset: int | None,
        length: int | None,
        suffix: int | None,
        if_match: str | None,
        make_sink: object,
        progress: Callable[[int], None] | None = None,
    ) -> FanoutGet:
        cfg = self.config
        if length is not None and offset is None and suffix is None:
            offset = 0  # the first ``length`` bytes (the wire wants an offset with a length)
        return FanoutGet(
            self._session_for_attempt,
            bucket=bucket,
            key=key,
            token=cfg.token,
            offset=offset,
            length=length,
            suffix=suffix,
            if_match=if_match,
            make_sink=make_sink,  # type: ignore[arg-type]
            prefetch=cfg.prefetch,
            max_attempts=cfg.max_attempts,
            integrity_retries=cfg.integrity_retries,
            verify_sha256=cfg.verify_sha256,
            progress=progress,
        )

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        offset: int | None = None,
        length: int | None = None,
        suffix: int | None = None,
        if_match: str | None = None,
    ) -> bytearray:
        """The object (or ``length`` bytes from ``offset``, 0 if not given, or the last
        ``suffix`` bytes), fetched in parallel parts, every block verified. Returns a
        bytearray (no copy)."""
        _, buffer = await self.get_with_info(
            bucket, key, offset=offset, length=length, suffix=suffix, if_match=if_match
        )
        return buffer

    async def get_with_info(
        self,
        bucket: str,
        key: str,
        *,
        offset: int | None = None,
        length: int | None = None,
        suffix: int | None = None,
        if_match: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[GetResult, bytearray]:
        """Like :meth:`get`, also returning the object's metadata and the range read."""
        holder: builtins.list[bytearray] = []

        def make_sink(info: ObjectInfo, size: int) -> Sink:
            holder.append(bytearray(size))
            return MemorySink(holder[0])

        result = await self._fanout(
            bucket, key, offset, length, suffix, if_match, make_sink, progress
        ).run()
        return result, holder[0] if holder else bytearray()

    async def get_into(
        self,
        bucket: str,
        key: str,
        buffer: bytearray | memoryview,
        *,
        offset: int | None = None,
        length: int | None = None,
    ) -> GetResult:
        """Read into the caller's buffer (it must be large enough for the range)."""

        def make_sink(info: ObjectInfo, size: int) -> Sink:
            if len(buffer) < size:
                raise RequestFailed(
                    f"buffer of {len(buffer)} bytes is smaller than {size}",
                    code=ErrorCode.QS_BAD_REQUEST,
                )
            return MemorySink(buffer)

        return await self._fanout(bucket, key, offset, length, None, None, make_sink).run()

    async def get_to(
        self,
        bucket: str,
        key: str,
        make_sink: Callable[[ObjectInfo, int], Sink],
        *,
        offset: int | None = None,
        length: int | None = None,
        suffix: int | None = None,
        if_match: str | None = None,
    ) -> GetResult:
        """Read into a sink of the caller's (``make_sink(info, range_length)`` is called once
        the size is known): for streaming into custom destinations."""
        return await self._fanout(bucket, key, offset, length, suffix, if_match, make_sink).run()

    async def get_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        *,
        offset: int | None = None,
        length: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> GetResult:
        """Download to ``path`` by positional writes; the file appears only when complete."""
        sinks: builtins.list[FileSink] = []

        def make_sink(info: ObjectInfo, size: int) -> Sink:
            sinks.append(FileSink(Path(path), size))
            return sinks[0]

        try:
            result = await self._fanout(
                bucket, key, offset, length, None, None, make_sink, progress
            ).run()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        await sinks[0].commit()
        return result

    # -- PUT

    async def put(
        self,
        bucket: str,
        key: str,
        data: Buffer | str | os.PathLike[str] | AsyncIterable[Buffer] | Iterable[Buffer],
        *,
        content_type: str | None = None,
        meta: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ObjectInfo:
        """Upload an object from bytes, a file path, or an (async) iterable of chunks.

        Bytes and files are hashed first so the gateway verifies the SHA-256 before it
        publishes the version; they are re-sent if the connection breaks (a PUT is atomic,
        so repeating it is safe). Iterables are hashed as they stream and sent once.
        """
        replayable = isinstance(data, bytes | bytearray | memoryview | str | os.PathLike)
        attempt = 1
        while True:
            session = await self._session_for_attempt(attempt)
            try:
                return await self._put_once(
                    session,
                    bucket,
                    key,
                    data,
                    content_type=content_type,
                    meta=meta,
                    if_match=if_match,
                    if_none_match=if_none_match,
                    progress=progress,
                )
            except ConnectionFailed:
                if not replayable or attempt >= self.config.max_attempts:
                    raise
                attempt += 1

    async def _put_once(
        self,
        session: ClientSession,
        bucket: str,
        key: str,
        data: object,
        *,
        content_type: str | None,
        meta: dict[str, str] | None,
        if_match: str | None,
        if_none_match: str | None,
        progress: Callable[[int], None] | None = None,
    ) -> ObjectInfo:
        cfg = self.config
        size: int | None = None
        digest: bytes | None = None
        path: Path | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            size = len(data)
            digest = hashlib.sha256(data).digest()
        elif isinstance(data, str | os.PathLike):
            path = Path(data)
            size = path.stat().st_size
            digest = await asyncio.to_thread(_file_sha256, path)
        header = self._header(
            op="PUT",
            bucket=bucket,
            key=key,
            content_length=size,
            sha256=digest,
            content_type=content_type,
            meta=meta,
            if_match=if_match,
            if_none_match=if_none_match,
        )
        call = session.start(header)
        qs, sid, driver = session.qs, call.stream_id, session.driver
        streamed = hashlib.sha256() if digest is None else None

        async def send(chunk: Buffer) -> None:
            while compat.send_buffered(driver.quic, sid) >= cfg.put_buffer:
                if call.response.done():
                    return
                await session.writable()
            if streamed is not None:
                streamed.update(chunk)
            if not call.response.done():
                qs.send_data(sid, chunk)
                driver.transmit_soon()
                if progress is not None:
                    progress(len(chunk))

        try:
            if isinstance(data, bytes | bytearray | memoryview):
                view = memoryview(data)
                for pos in range(0, len(view), cfg.put_chunk):
                    await send(view[pos : pos + cfg.put_chunk])
            elif path is not None:
                await _send_file(path, cfg.put_chunk, send)
            elif isinstance(data, AsyncIterable):
                async for chunk in data:
                    await send(chunk)
            else:
                for chunk in data:  # type: ignore[attr-defined]
                    await send(chunk)
            if not call.response.done():
                if streamed is not None:
                    qs.send_trailer(sid, Trailer(sha256=streamed.digest()))
                else:
                    qs.end_stream(sid)
                driver.transmit_soon()
            response = await call.response
            await call.done
        except BaseException as exc:
            if not call.done.done() and not isinstance(exc, QuicstoreError):
                call.cancel()
            raise
        assert isinstance(response, ResponseHeader)
        return _info(bucket, key, response)


def _info(bucket: str, key: str, header: ResponseHeader) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=header.size or 0,
        etag=header.etag or "",
        mtime_ns=header.mtime_ns or 0,
        block_size=header.block_size or 0,
        sha256=header.sha256 or b"",
        content_type=header.content_type,
        meta=header.meta or {},
    )


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.digest()


async def _send_file(path: Path, chunk: int, send: object) -> None:
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        buffer = memory.aligned_buffer(4 * MIB)  # the kernel's copy is faster aligned
        while True:
            n = await loop.run_in_executor(None, os.preadv, fd, [buffer], offset)
            if n <= 0:
                return
            view = buffer[:n]
            for pos in range(0, n, chunk):
                await send(view[pos : pos + chunk])  # type: ignore[operator]
            offset += n
    finally:
        os.close(fd)
