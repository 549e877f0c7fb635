"""The ``quicstore`` command: argument parsing and output only (no protocol logic here).

Exit codes: 0 success, 1 unexpected failure, 2 usage, 3 not found, 4 authentication or
permission, 5 network (unreachable, connection lost), 6 integrity (checksum mismatch),
7 precondition failed or object changed, 8 request refused for another reason.
Every failure prints one line to stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import errors
from ..client.client import Client, ClientConfig, InsecureConnectionWarning, parse_url
from ..plan.prefetch import PrefetchConfig
from ..store.base import ObjectInfo

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_NETWORK = 5
EXIT_INTEGRITY = 6
EXIT_PRECONDITION = 7
EXIT_REFUSED = 8

MIB = 1024 * 1024
log = logging.getLogger("quicstore.cli")


class UsageError(Exception):
    """A command line that cannot be acted on."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    if isinstance(exc, UsageError | ValueError):
        return EXIT_USAGE
    if isinstance(exc, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.AuthError):
        return EXIT_AUTH
    if isinstance(exc, errors.ConnectionFailed | ConnectionError | OSError):
        return (
            EXIT_NETWORK
            if not isinstance(exc, FileNotFoundError | PermissionError)
            else (EXIT_FAILURE)
        )
    if isinstance(exc, errors.IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(exc, errors.PreconditionFailed | errors.NotModified):
        return EXIT_PRECONDITION
    if isinstance(exc, errors.QuicstoreError):
        return EXIT_REFUSED
    return EXIT_FAILURE


# --- argument parsing ---------------------------------------------------------------------


def _size(text: str) -> int:
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _add_client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--token", help="bearer token (default: $QUICSTORE_TOKEN)")
    g.add_argument(
        "--ca",
        type=Path,
        default=os.environ.get("QUICSTORE_CA"),
        help="CA certificate(s) to verify the gateway with (default: $QUICSTORE_CA)",
    )
    g.add_argument(
        "--pin",
        default=os.environ.get("QUICSTORE_PIN"),
        help="SHA-256 fingerprint the gateway's certificate must have (default: $QUICSTORE_PIN)",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the gateway's certificate (warns every time)",
    )
    g.add_argument(
        "--parts",
        type=int,
        default=64,
        help="most range requests in flight per object (default 64)",
    )
    g.add_argument(
        "--part-size", type=_size, default=4 * MIB, help="bytes per range request (default 4MiB)"
    )
    g.add_argument(
        "--max-datagram-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="cap on UDP payload size (default: what the route's MTU carries)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="quicstore",
        description="Move AI training data over QUIC: a storage gateway and its client.",
        epilog="URLs look like quicstore://HOST:PORT/BUCKET/KEY (several gateways: "
        "quicstore://H1:P1,H2:P2/BUCKET/KEY). Exit codes: 0 ok, 2 usage, "
        "3 not found, 4 auth, 5 network, 6 integrity, 7 precondition, 8 refused.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run a gateway", description="Run a quicstore gateway.")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("quicstore-data"),
        help="store and gateway state folder (default ./quicstore-data)",
    )
    p.add_argument("--listen", default="127.0.0.1:4433", help="HOST:PORT (default 127.0.0.1:4433)")
    p.add_argument("--cert", type=Path, help="TLS certificate chain (default: self-signed)")
    p.add_argument("--key", type=Path, help="TLS private key")
    p.add_argument(
        "--store",
        choices=["disk", "memory", "azure", "s3"],
        default="disk",
        help="disk (under --root, default), memory, azure (Azure Blob Storage; needs "
        "pip install 'quicstore[azure]') or s3 (S3 or an S3-compatible service; needs "
        "pip install 'quicstore[s3]')",
    )
    p.add_argument(
        "--azure-connection-string",
        metavar="STRING",
        help="Azure Storage connection string for --store azure "
        "(default: $QUICSTORE_AZURE_CONNECTION_STRING; the environment keeps it out of ps)",
    )
    p.add_argument(
        "--azure-container-prefix",
        default="",
        metavar="PREFIX",
        help="--store azure: bucket B is container PREFIX+B (default: none)",
    )
    p.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="--store s3: the service's URL, e.g. http://127.0.0.1:9000 (default: AWS); "
        "credentials come from the standard AWS variables, profile or config files",
    )
    p.add_argument(
        "--s3-bucket-prefix",
        default="",
        metavar="PREFIX",
        help="--store s3: bucket B is S3 bucket PREFIX+B (default: none)",
    )
    p.add_argument(
        "--s3-region",
        metavar="REGION",
        help="--store s3: AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the AWS "
        "config file, else us-east-1)",
    )
    p.add_argument(
        "--open", action="store_true", help="serve without tokens (local development only)"
    )
    p.add_argument(
        "--public",
        action="append",
        default=[],
        metavar="BUCKET",
        help="bucket readable without a token (repeatable)",
    )
    p.add_argument("--secrets", type=Path, help="token secrets file (default: in the root)")
    p.add_argument(
        "--block-size",
        type=_size,
        default=64 * 1024,
        help="checksum block size for new objects (default 64KiB)",
    )
    p.add_argument("--max-object-size", type=_size, default=0, help="largest PUT (0: no limit)")
    p.add_argument("--qlog-dir", type=Path, help="write qlog traces here")
    p.add_argument("--retry", action="store_true", help="require address validation (Retry)")
    p.add_argument(
        "--no-verify-reads",
        action="store_true",
        help="skip checking blocks read from disk against their checksums",
    )
    p.add_argument(
        "--max-datagram-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="cap on UDP payload size (default: what each route's MTU carries)",
    )
    p.add_argument(
        "--silence-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="drop a client silent this long while data waits for it (default 15)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="drop an idle connection after this long (default 60)",
    )
    p.add_argument(
        "--max-connections-per-address",
        type=int,
        default=256,
        metavar="N",
        help="connections one IP address may hold (default 256)",
    )
    p.add_argument(
        "--retry-threshold",
        type=float,
        default=200.0,
        metavar="PER_SECOND",
        help="new connections per second that switch Retry on (default 200; 0: never)",
    )
    p.add_argument(
        "--no-pmtu-discovery",
        action="store_true",
        help="use the route's MTU at once instead of probing up from 1200 bytes",
    )
    p.add_argument(
        "--no-batched-io",
        action="store_true",
        help="use the event loop's UDP transport instead of quicstore's (no GSO/GRO)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="gateway processes sharing the port (SO_REUSEPORT; default 1, disk store only)",
    )
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--access-log", action="store_true", help="log one line per request")
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: on "
        "127.0.0.1; with --workers N, worker i on PORT+i; default: off)",
    )

    p = sub.add_parser("token", help="mint access tokens", description="Manage tokens.")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="mint a token signed with the gateway's secret")
    t.add_argument("--root", type=Path, default=Path("quicstore-data"))
    t.add_argument("--secrets", type=Path, help="token secrets file (default: in the root)")
    t.add_argument("--scope", required=True, help="BUCKET or BUCKET/PREFIX ('*' for all)")
    t.add_argument("--ops", default="read,list", help="comma list of read,write,list,delete")
    t.add_argument("--ttl", type=_duration, default=3600, help="lifetime, e.g. 30m, 1h, 7d")
    t = tsub.add_parser(
        "rotate",
        help="add a new signing key and make it active (old keys "
        "stay valid until retired; send the gateway SIGHUP to load it)",
    )
    t.add_argument("--root", type=Path, default=Path("quicstore-data"))
    t.add_argument("--secrets", type=Path, help="token secrets file (default: in the root)")
    t = tsub.add_parser("retire", help="stop accepting tokens of an old signing key")
    t.add_argument("--root", type=Path, default=Path("quicstore-data"))
    t.add_argument("--secrets", type=Path, help="token secrets file (default: in the root)")
    t.add_argument("--kid", required=True, help="key ID to retire")

    p = sub.add_parser(
        "get",
        help="download objects",
        description="Download an object, a byte range, or (with -r) every object under a prefix.",
    )
    p.add_argument("url", help="quicstore://HOST:PORT/BUCKET/KEY (or .../PREFIX/ with -r)")
    p.add_argument(
        "dest", nargs="?", help="file or folder (default: the key's last part; '-' for stdout)"
    )
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("--range", help="bytes A-B (inclusive), A- or -N (last N bytes)")
    _add_client_options(p)

    p = sub.add_parser(
        "put", help="upload files", description="Upload a file, stdin, or (with -r) a folder."
    )
    p.add_argument("src", help="file, folder (with -r) or '-' for stdin")
    p.add_argument("url", help="quicstore://HOST:PORT/BUCKET/KEY (or .../PREFIX/ with -r)")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("--content-type")
    p.add_argument("--meta", action="append", default=[], metavar="K=V")
    p.add_argument("--if-none-match", help="'*' to create only if absent")
    p.add_argument("--if-match", help="replace only this ETag")
    _add_client_options(p)

    p = sub.add_parser("ls", help="list keys", description="List keys under a prefix.")
    p.add_argument("url", help="quicstore://HOST:PORT/BUCKET[/PREFIX]")
    p.add_argument("-R", "--recursive", action="store_true", help="do not roll up at '/'")
    p.add_argument("-l", "--long", action="store_true", help="sizes, times and ETags")
    _add_client_options(p)

    p = sub.add_parser("stat", help="object metadata", description="Show an object's metadata.")
    p.add_argument("url", help="quicstore://HOST:PORT/BUCKET/KEY")
    _add_client_options(p)

    p = sub.add_parser(
        "rm",
        help="delete objects",
        description="Delete an object (or with -r every object under a prefix).",
    )
    p.add_argument("url", help="quicstore://HOST:PORT/BUCKET/KEY")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("--if-match", help="delete only this ETag")
    _add_client_options(p)

    p = sub.add_parser(
        "demo",
        help="run the quick-start job",
        description="Start a gateway on "
        "a local store, upload a sample dataset of shards, read it back through "
        "the shard reader, print throughput, stop.",
    )
    p.add_argument("--root", type=Path, default=Path("quicstore-demo"))
    p.add_argument("--shards", type=int, default=64)
    p.add_argument("--shard-size", type=_size, default=4 * MIB)
    p.add_argument("--keep", action="store_true", help="keep the demo's store folder")
    return parser


# --- commands ------------------------------------------------------------------------------


def _client(args: argparse.Namespace, url: str) -> Client:
    if args.insecure:
        warnings.warn(
            "--insecure: the gateway's certificate is NOT verified",
            InsecureConnectionWarning,
            stacklevel=1,
        )
    config = ClientConfig(
        token=args.token,
        ca_file=args.ca,
        pin=args.pin,
        insecure=args.insecure,
        prefetch=replace(PrefetchConfig(), part_size=args.part_size, max_parts=args.parts),
        max_datagram_size=args.max_datagram_size,
    )
    if not (args.ca or args.pin or args.insecure):
        raise UsageError(
            "the gateway's certificate must be verified: pass --ca FILE or --pin SHA256 "
            "(printed by 'quicstore serve'), or --insecure to skip it"
        )
    parse_url(url)  # a clear error for a malformed URL before anything else
    return Client(url, config)


def _bucket_key(url: str, *, need_key: bool) -> tuple[str, str]:
    _, _, bucket, key = parse_url(url)
    if not bucket:
        raise UsageError(f"no bucket in {url}")
    if need_key and not key:
        raise UsageError(f"no key in {url}")
    return bucket, key or ""


def _parse_range(text: str) -> dict[str, int]:
    try:
        if text.startswith("-"):
            return {"suffix": int(text[1:])}
        first, _, last = text.partition("-")
        if not last:
            return {"offset": int(first)}
        if int(last) < int(first):
            raise ValueError
        return {"offset": int(first), "length": int(last) - int(first) + 1}
    except ValueError:
        raise UsageError(f"--range {text!r}: expected A-B, A- or -N") from None


class _Progress:
    """A tqdm bar on a terminal (throughput included), nothing otherwise."""

    def __init__(self, args: argparse.Namespace, total: int | None, label: str) -> None:
        self.bar: Any = None
        if not args.quiet and not args.json and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label[:40],
                leave=False,
                file=sys.stderr,
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(args: argparse.Namespace, record: dict[str, Any], human: str) -> None:
    print(json.dumps(record) if args.json else human, flush=True)


def _rate(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 1e-9) / 1e6:.1f} MB/s"


def _info_record(info: ObjectInfo) -> dict[str, Any]:
    return {
        "bucket": info.bucket,
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "mtime_ns": info.mtime_ns,
        "block_size": info.block_size,
        "sha256": info.sha256.hex(),
        "content_type": info.content_type,
        "meta": info.meta,
    }


async def cmd_get(args: argparse.Namespace) -> int:
    bucket, key = _bucket_key(args.url, need_key=not args.recursive)
    async with _client(args, args.url) as client:
        if args.recursive:
            dest = Path(args.dest or ".")
            prefix = key
            total = 0
            started = time.perf_counter()
            objects = await client.list_all(bucket, prefix=prefix)
            for info in objects:
                relative = info.key[len(prefix) :].lstrip("/")
                target = (dest / relative).resolve()
                if dest.resolve() not in target.parents:
                    raise UsageError(f"key {info.key!r} would land outside {dest}")
                target.parent.mkdir(parents=True, exist_ok=True)
                await client.get_file(bucket, info.key, target)
                total += info.size
            seconds = time.perf_counter() - started
            _report(
                args,
                {"objects": len(objects), "bytes": total, "seconds": seconds},
                f"downloaded {len(objects)} objects, {total} bytes in {seconds:.2f}s "
                f"({_rate(total, seconds)})",
            )
            return EXIT_OK
        rng = _parse_range(args.range) if args.range else {}
        started = time.perf_counter()
        if args.dest == "-":
            result, data = await client.get_with_info(
                bucket,
                key,
                offset=rng.get("offset"),
                length=rng.get("length"),
                suffix=rng.get("suffix"),
            )
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return EXIT_OK
        target = Path(args.dest or key.rsplit("/", 1)[-1])
        if target.is_dir():
            target = target / key.rsplit("/", 1)[-1]
        progress = _Progress(args, None, key)
        try:
            if "suffix" in rng:
                result = await _get_suffix(client, bucket, key, target, rng["suffix"])
            else:
                result = await client.get_file(
                    bucket,
                    key,
                    target,
                    offset=rng.get("offset"),
                    length=rng.get("length"),
                    progress=progress.update,
                )
        finally:
            progress.close()
        seconds = time.perf_counter() - started
        _report(
            args,
            {
                "key": key,
                "file": str(target),
                "offset": result.offset,
                "bytes": result.length,
                "etag": result.info.etag,
                "seconds": seconds,
            },
            f"{bucket}/{key} -> {target}: {result.length} bytes in {seconds:.2f}s "
            f"({_rate(result.length, seconds)}), verified",
        )
    return EXIT_OK


async def _get_suffix(client: Client, bucket: str, key: str, target: Path, suffix: int) -> Any:
    result, data = await client.get_with_info(bucket, key, suffix=suffix)
    target.write_bytes(data)
    return result


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


async def cmd_put(args: argparse.Namespace) -> int:
    bucket, key = _bucket_key(args.url, need_key=not args.recursive)
    meta = {}
    for item in args.meta:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--meta {item!r}: expected K=V")
        meta[name] = value
    async with _client(args, args.url) as client:
        started = time.perf_counter()
        if args.recursive:
            src = Path(args.src)
            if not src.is_dir():
                raise UsageError(f"{src} is not a folder")
            prefix = key if not key or key.endswith("/") else key + "/"
            files = list(_walk(src))
            total = 0
            semaphore = asyncio.Semaphore(8)

            async def upload(path: Path) -> None:
                nonlocal total
                async with semaphore:
                    info = await client.put(
                        bucket,
                        prefix + path.relative_to(src).as_posix(),
                        path,
                        content_type=args.content_type,
                        meta=meta or None,
                    )
                    total += info.size

            await asyncio.gather(*(upload(p) for p in files))
            seconds = time.perf_counter() - started
            _report(
                args,
                {"objects": len(files), "bytes": total, "seconds": seconds},
                f"uploaded {len(files)} files, {total} bytes in {seconds:.2f}s "
                f"({_rate(total, seconds)})",
            )
            return EXIT_OK
        source: Any = sys.stdin.buffer.read() if args.src == "-" else Path(args.src)
        if isinstance(source, Path) and not source.is_file():
            raise UsageError(f"{source} is not a file")
        total = len(source) if isinstance(source, bytes) else source.stat().st_size
        progress = _Progress(args, total, key)
        try:
            info = await client.put(
                bucket,
                key,
                source,
                content_type=args.content_type,
                meta=meta or None,
                if_match=args.if_match,
                if_none_match=args.if_none_match,
                progress=progress.update,
            )
        finally:
            progress.close()
        seconds = time.perf_counter() - started
        _report(
            args,
            _info_record(info) | {"seconds": seconds},
            f"{args.src} -> {bucket}/{key}: {info.size} bytes in {seconds:.2f}s "
            f"({_rate(info.size, seconds)}), etag {info.etag}",
        )
    return EXIT_OK


async def cmd_ls(args: argparse.Namespace) -> int:
    bucket, prefix = _bucket_key(args.url, need_key=False)
    async with _client(args, args.url) as client:
        delimiter = None if args.recursive else "/"
        async for page in client.list(bucket, prefix=prefix, delimiter=delimiter):
            for rolled in page.prefixes:
                _report(args, {"prefix": rolled}, f"{'PRE':>12}  {rolled}")
            for entry in page.entries:
                if args.json:
                    _report(
                        args,
                        {
                            "key": entry.key,
                            "size": entry.size,
                            "etag": entry.etag,
                            "mtime_ns": entry.mtime_ns,
                        },
                        "",
                    )
                elif args.long:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.mtime_ns / 1e9))
                    print(f"{entry.size:>12}  {when}  {entry.etag}  {entry.key}")
                else:
                    print(f"{entry.size:>12}  {entry.key}")
    return EXIT_OK


async def cmd_stat(args: argparse.Namespace) -> int:
    bucket, key = _bucket_key(args.url, need_key=True)
    async with _client(args, args.url) as client:
        info = await client.stat(bucket, key)
    record = _info_record(info)
    human = "\n".join(f"{name:>12}: {value}" for name, value in record.items())
    _report(args, record, human)
    return EXIT_OK


async def cmd_rm(args: argparse.Namespace) -> int:
    bucket, key = _bucket_key(args.url, need_key=not args.recursive)
    async with _client(args, args.url) as client:
        if args.recursive:
            objects = await client.list_all(bucket, prefix=key)
            for info in objects:
                await client.delete(bucket, info.key)
            _report(args, {"deleted": len(objects)}, f"deleted {len(objects)} objects")
            return EXIT_OK
        etag = await client.delete(bucket, key, if_match=args.if_match)
        _report(args, {"deleted": key, "etag": etag}, f"deleted {bucket}/{key} ({etag})")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from ..auth import PERMISSIONS, mint_token
    from ..server.state import active_secret, retire_secret, rotate_secret

    if args.token_command == "rotate":
        kid = rotate_secret(args.root, args.secrets)
        print(f"new signing key {kid} is active; send SIGHUP to the gateway to load it")
        return EXIT_OK
    if args.token_command == "retire":
        retire_secret(args.root, args.secrets, args.kid)
        print(f"key {args.kid} retired; send SIGHUP to the gateway to stop accepting it")
        return EXIT_OK

    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = set(ops) - set(PERMISSIONS)
    if unknown:
        raise UsageError(
            f"--ops: unknown {', '.join(sorted(unknown))} (choose from {', '.join(PERMISSIONS)})"
        )
    bucket, _, prefix = args.scope.partition("/")
    kid, secret = active_secret(args.root, args.secrets)
    print(
        mint_token(
            secret,
            kid=kid,
            bucket=bucket,
            ops=ops,
            now=int(time.time()),
            ttl=args.ttl,
            prefix=prefix,
        )
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ..proto.settings import Settings
    from ..server.app import serve_forever
    from ..server.config import GatewayConfig

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT")
    host = host.strip("[]")
    azure_connection_string = _azure_options(args)
    _s3_options(args)
    metrics_listen = None
    if args.metrics_listen is not None:
        from ..server.metrics import parse_metrics_listen

        metrics_listen = parse_metrics_listen(args.metrics_listen)
        if metrics_listen[1] and metrics_listen[1] + max(args.workers, 1) - 1 > 65535:
            raise UsageError(
                f"--metrics-listen {args.metrics_listen!r}: worker i listens on PORT+i, "
                f"past 65535 with {args.workers} workers"
            )
    config = GatewayConfig(
        root=args.root,
        host=host,
        port=int(port),
        cert_file=args.cert,
        key_file=args.key,
        store=args.store,
        azure_connection_string=azure_connection_string,
        azure_container_prefix=args.azure_container_prefix,
        s3_endpoint_url=args.s3_endpoint_url,
        s3_bucket_prefix=args.s3_bucket_prefix,
        s3_region=args.s3_region,
        open_access=args.open,
        public_buckets=tuple(args.public),
        secrets_file=args.secrets,
        silence_timeout=args.silence_timeout,
        idle_timeout=args.idle_timeout,
        max_connections_per_address=args.max_connections_per_address,
        retry_threshold=args.retry_threshold or None,
        qlog_dir=args.qlog_dir,
        retry=args.retry,
        verify_reads=not args.no_verify_reads,
        max_datagram_size=args.max_datagram_size,
        workers=args.workers,
        batched_io=not args.no_batched_io,
        pmtu_discovery=not args.no_pmtu_discovery,
        metrics_listen=metrics_listen,
        settings=Settings(block_size=args.block_size, max_object_size=args.max_object_size),
    )
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1 and args.store != "disk":
        raise UsageError("--workers needs the disk store (a memory store is per process)")
    _configure_logging(args)
    if args.workers == 1:
        return _run(serve_forever(config))
    from ..server.workers import run_workers

    def run_worker(sock: socket.socket, *, metrics_sock: socket.socket | None, worker: int) -> int:
        return _run(
            serve_forever(
                config,
                _quiet,
                sock=sock,
                recover=False,
                metrics_sock=metrics_sock,
                worker=worker,
            )
        )

    return run_workers(config, run_worker)


def _azure_options(args: argparse.Namespace) -> str | None:
    """The connection string for ``--store azure`` (UsageError, exit 2, when it is missing,
    the SDK is not installed or the container prefix cannot start an Azure name)."""
    if args.store != "azure":
        return None
    # The SDK logs every HTTP request at INFO: keep that for --debug.
    logging.getLogger("azure").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    connection_string = args.azure_connection_string or os.environ.get(
        "QUICSTORE_AZURE_CONNECTION_STRING"
    )
    if not connection_string:
        raise UsageError(
            "--store azure needs --azure-connection-string or $QUICSTORE_AZURE_CONNECTION_STRING"
        )
    try:
        from ..store.azure import AzureStore, AzureStoreConfig
    except ImportError as exc:
        raise UsageError(
            f"--store azure needs the Azure SDK: pip install 'quicstore[azure]' ({exc})"
        ) from None
    try:
        AzureStore(
            AzureStoreConfig(connection_string, container_prefix=args.azure_container_prefix)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return connection_string


def _s3_options(args: argparse.Namespace) -> None:
    """Check ``--store s3``'s options (UsageError, exit 2, when aiobotocore is not installed
    or the endpoint URL, region or bucket prefix is malformed; missing credentials are found
    when the store connects, also exit 2)."""
    if args.store != "s3":
        return
    # botocore logs every request and credential lookup at DEBUG: keep that for --debug.
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        from ..store.s3 import S3Store, S3StoreConfig
    except ImportError as exc:
        raise UsageError(
            f"--store s3 needs aiobotocore: pip install 'quicstore[s3]' ({exc})"
        ) from None
    try:
        S3Store(
            S3StoreConfig(
                endpoint_url=args.s3_endpoint_url,
                bucket_prefix=args.s3_bucket_prefix,
                region=args.s3_region,
            )
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _quiet(line: str) -> None:
    """Workers leave announcements to the supervisor; they log that they are ready."""
    if line.startswith("quicstore gateway listening"):
        log.info("worker ready")
    else:
        log.debug("%s", line)


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO
    fmt = (
        '{"ts": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "msg": %(message)r}'
        if getattr(args, "log_format", "text") == "json"
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "workers", 1) > 1:  # which worker logged a line
        fmt = fmt.replace('"level"', '"pid": %(process)d, "level"').replace(
            "%(levelname)s %(name)s", "%(levelname)s [%(process)d] %(name)s"
        )
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    if not args.debug:
        logging.getLogger("quic").setLevel(logging.WARNING)
    if not getattr(args, "access_log", False):
        logging.getLogger("quicstore.access").setLevel(logging.WARNING)


def _run(coro: Any) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro))
    except ImportError:
        return int(asyncio.run(coro))


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "get": cmd_get,
    "put": cmd_put,
    "ls": cmd_ls,
    "stat": cmd_stat,
    "rm": cmd_rm,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quicstore`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    else:
        logging.basicConfig(level=logging.WARNING, format="quicstore: %(message)s")
        warnings.simplefilter("default")
        warnings.formatwarning = lambda m, c, *a, **k: f"quicstore: warning: {m}\n"
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "token":
            return cmd_token(args)
        if args.command == "demo":
            from .demo import run_demo

            return _run(run_demo(args))
        return _run(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print("quicstore: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        if args.debug:
            raise
        code = exit_code_for(exc)
        if isinstance(exc, errors.QuicstoreError):
            message = f"{exc.message} [{exc.code_name}]"
        else:
            message = str(exc) or type(exc).__name__
        print(f"quicstore: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
