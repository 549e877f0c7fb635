"""Gateway configuration: one dataclass, each field with its unit and why its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..proto.settings import Settings

MIB = 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    """What ``quicstore serve`` runs with."""

    root: Path
    """Folder of the disk store and the gateway's own state (certificate, secrets)."""
    host: str = "127.0.0.1"
    """Address to listen on: loopback by default, so nothing is exposed by accident."""
    port: int = 4433
    """UDP port; 0 picks a free one (printed at start)."""
    cert_file: Path | None = None
    """TLS certificate chain (PEM); None: a self-signed one kept in the root."""
    key_file: Path | None = None
    """TLS private key (PEM) for ``cert_file``."""
    protocols: tuple[str, ...] = ("quicstore/1", "h3")
    """ALPNs served on the port, in order of preference (quicstore/1 wins when offered).
    ``hq-interop`` (HTTP/0.9) can be added for the QUIC interop runner's test cases."""
    h3_root_bucket: str | None = None
    """For h3 and hq-interop: serve this bucket at the root (``/<key>``) instead of
    ``/<bucket>/<key>``; for standard clients and interop suites that fetch ``/file``."""
    store: str = "disk"
    """``disk`` (under ``root``), ``memory`` (tests, demos), ``azure`` (Azure Blob Storage,
    shared by any number of gateways; needs the ``azure`` extra) or ``s3`` (S3 or an
    S3-compatible service, shared likewise; needs the ``s3`` extra)."""
    azure_connection_string: str | None = field(default=None, repr=False)
    """Azure Storage connection string for the ``azure`` store (account key or SAS; out of
    ``repr`` so that it is never logged)."""
    azure_container_prefix: str = ""
    """For the ``azure`` store: bucket ``b`` is container ``<prefix>b`` (so deployments can
    share an account); Azure's container naming rule applies to the result."""
    s3_endpoint_url: str | None = None
    """For the ``s3`` store: the service's URL; None: AWS's endpoint for the region.
    Credentials come from botocore's standard chain (environment, profile, config files,
    instance role), never from here."""
    s3_bucket_prefix: str = ""
    """For the ``s3`` store: bucket ``b`` is the S3 bucket ``<prefix>b``; S3's bucket naming
    rule applies to the result."""
    s3_region: str | None = None
    """For the ``s3`` store: AWS region; None: botocore's default, else ``us-east-1``."""
    settings: Settings = field(default_factory=Settings)
    """Protocol limits announced to clients (spec Section 5)."""
    open_access: bool = False
    """Serve without tokens (development only). Off: every request needs a token except
    what ``public_buckets`` allows."""
    public_buckets: tuple[str, ...] = ()
    """Buckets readable (GET, HEAD, LIST) without a token."""
    client_ca: Path | None = None
    """Require client certificates (mutual TLS) that chain to these CA certificates (PEM);
    a connection without one is closed before any request is served."""
    secrets_file: Path | None = None
    """Token signing secrets (JSON); None: ``<root>/.quicstore/secrets.json``, created on
    first start."""
    stream_window: int = 4 * MIB
    """Largest receive window per stream, bytes: what a client may send ahead of the disk
    (PUT). Windows start at 256 KiB and grow while the disk keeps up."""
    connection_window: int = 16 * MIB
    """Receive window per connection, bytes."""
    stream_send_buffer: int = 2 * MIB
    """Bytes a GET may have queued in QUIC's send buffer before it reads more from disk: two
    chunks keep the sender busy while the next read completes."""
    connection_send_buffer: int = 8 * MIB
    """Bytes all GETs of one connection may have queued; bounds memory per client and keeps
    one connection's large GETs from starving its small ones."""
    gateway_send_buffer: int = 64 * MIB
    """Bytes all connections together may have queued: bounds the gateway's memory."""
    read_chunk: int = 256 * 1024
    """Bytes per disk read and DATA frame (rounded up to the object's block size)."""
    reads_in_flight: int = 3
    """Concurrent disk reads per GET: enough to hide read latency behind sending."""
    read_buffers: int = 128
    """Read buffers shared by all GETs (each ``read_chunk`` bytes): 32 MiB at the default."""
    io_threads: int = 8
    """Threads doing file I/O (the event loop never blocks on the disk)."""
    workers: int = 1
    """Gateway processes sharing the port (SO_REUSEPORT; the kernel keeps each connection
    with one of them). More than one needs the disk store."""
    verify_reads: bool = True
    """Check every block read from disk against its stored CRC32C before sending it
    (about 8 GB/s per core: cheap insurance against bit rot)."""
    durable: bool = True
    """fsync data, folders and index before acknowledging a PUT."""
    max_datagram_size: int | None = None
    """Cap on the UDP payload sent, bytes. Each connection uses the largest its route's MTU
    carries (65000 on loopback, 1452 on a 1500-MTU path); None: no cap beyond that."""
    pmtu_discovery: bool = True
    """Start each connection at 1200-byte datagrams and probe up to what the route's MTU
    (and ``max_datagram_size``) allows (RFC 8899); False: trust the route's MTU at once."""
    batched_io: bool = True
    """UDP through quicstore's own transport: drained in batches, GSO sends and GRO
    receives where the kernel offers them (False: the event loop's datagram transport)."""
    idle_timeout: float = 60.0
    """Seconds of silence before a connection is dropped."""
    silence_timeout: float = 15.0
    """Seconds without a datagram from a client while data waits for its ACK before the
    client is considered gone and its requests freed (much sooner than the idle timeout)."""
    header_timeout: float = 10.0
    """Seconds a request stream may take to deliver its REQUEST frame (slow-loris)."""
    drain_timeout: float = 10.0
    """Seconds in-flight requests get to finish after SIGTERM, before connections close."""
    retry: bool = False
    """Make clients prove their address with a Retry before any work (anti-spoofing)."""
    retry_threshold: float | None = 200.0
    """New connections per second above which Retry switches itself on for 10 s; None: off."""
    max_connections_per_address: int | None = 256
    """Connections one IP address may hold; more are refused (CONNECTION_REFUSED)."""
    qlog_dir: Path | None = None
    """Write a qlog trace per connection here."""
    congestion_control: str = "cubic"
    """aioquic congestion controller: ``reno`` or ``cubic``."""
    metrics_listen: tuple[str, int] | None = None
    """(host, TCP port) of the Prometheus text endpoint (``GET /metrics``); None: off.
    Port 0 picks a free one. With ``workers`` > 1, worker ``i`` serves its own metrics on
    port + ``i`` (each worker is its own process with its own counters)."""
