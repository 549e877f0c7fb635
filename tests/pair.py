"""An in-memory client/server pair: two real aioquic QuicConnections exchanging datagrams
in memory under a fake clock, each wrapped in a QuicstoreConnection.

The server side is answered by :class:`Responder`, a small synchronous gateway over a dict
that uses the core's semantics, integrity and auth functions: enough to drive every
operation and error path of the protocol without sockets, threads or the wall clock.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from quicstore.auth import Authorizer
from quicstore.certs import generate_self_signed
from quicstore.proto import events as ev
from quicstore.proto.codes import ALPN, ErrorCode
from quicstore.proto.connection import QuicstoreConnection
from quicstore.proto.errors import RequestError
from quicstore.proto.integrity import BodyDigester, IntegrityError, blocks_touched
from quicstore.proto.messages import ListEntry, Listing, RequestHeader, ResponseHeader
from quicstore.proto.semantics import (
    check_conditions,
    etag_from_sha256,
    list_page_limit,
    resolve_range,
    validate_request,
)
from quicstore.proto.settings import Settings

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
CERT_TIME = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_CERT: tuple[bytes, bytes] | None = None


def test_certificate() -> tuple[bytes, bytes]:
    """One self-signed certificate per test session (generating keys takes a moment)."""
    global _CERT
    if _CERT is None:
        _CERT = generate_self_signed(now=CERT_TIME)
    return _CERT


test_certificate.__test__ = False  # type: ignore[attr-defined]


@dataclass
class StoredObject:
    data: bytes
    etag: str
    mtime_ns: int
    block_size: int
    checksums: list[int]
    sha256: bytes
    content_type: str | None = None
    meta: dict[str, str] | None = None

    def header(self, **extra: int) -> ResponseHeader:
        return ResponseHeader(
            size=len(self.data),
            etag=self.etag,
            mtime_ns=self.mtime_ns,
            block_size=self.block_size,
            sha256=self.sha256,
            content_type=self.content_type,
            meta=self.meta,
            **extra,
        )


@dataclass
class _Upload:
    header: RequestHeader
    digester: BodyDigester
    body: bytearray = field(default_factory=bytearray)
    trailer_sha: bytes | None = None


class Responder:
    """A synchronous in-memory gateway answering a server-side QuicstoreConnection."""

    def __init__(
        self,
        conn: QuicstoreConnection,
        clock: Callable[[], float],
        authorizer: Authorizer,
        chunk: int = 5000,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.authorizer = authorizer
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: dict[int, _Upload] = {}
        self.chunk = chunk

    def put_object(self, bucket: str, key: str, data: bytes) -> StoredObject:
        digester = BodyDigester(self.conn.local_settings.block_size)
        digester.update(data)
        checksums, sha = digester.finish()
        obj = StoredObject(
            data,
            etag_from_sha256(sha),
            int(self.clock() * 1e9),
            digester.block_size,
            checksums,
            sha,
        )
        self.objects[(bucket, key)] = obj
        return obj

    def handle(self, event: ev.Event) -> None:
        sid = getattr(event, "stream_id", None)
        try:
            if isinstance(event, ev.RequestReceived):
                self._request(event.stream_id, event.header)
            elif isinstance(event, ev.DataReceived) and event.stream_id in self.uploads:
                upload = self.uploads[event.stream_id]
                upload.digester.update(event.data)
                upload.body += event.data
            elif isinstance(event, ev.ChecksumsReceived) and event.stream_id in self.uploads:
                self.uploads[event.stream_id].digester.expect(event.first_block, event.checksums)
            elif isinstance(event, ev.TrailerReceived) and event.stream_id in self.uploads:
                self.uploads[event.stream_id].trailer_sha = event.trailer.sha256
            elif isinstance(event, ev.StreamEnded) and event.stream_id in self.uploads:
                self._commit(event.stream_id)
            elif isinstance(event, ev.StreamReset | ev.StreamAbandoned):
                self.uploads.pop(event.stream_id, None)
        except RequestError as exc:
            assert sid is not None
            self.uploads.pop(sid, None)
            self.conn.send_error(sid, exc.code, exc.reason)

    def _request(self, sid: int, h: RequestHeader) -> None:
        settings = self.conn.local_settings
        validate_request(h, settings)
        scope = h.prefix or "" if h.op == "LIST" else h.key or ""
        self.authorizer.check(h.token, h.op, h.bucket, scope, self.clock())
        if h.op == "LIST":
            self._list(sid, h, list_page_limit(h, settings))
            return
        assert h.key is not None
        obj = self.objects.get((h.bucket, h.key))
        check_conditions(h, obj.etag if obj else None)
        if h.op == "PUT":
            self.uploads[sid] = _Upload(h, BodyDigester(settings.block_size))
        elif h.op == "DELETE":
            assert obj is not None
            del self.objects[(h.bucket, h.key)]
            self.conn.send_response(sid, ResponseHeader(etag=obj.etag), end_stream=True)
        elif h.op == "HEAD":
            assert obj is not None
            self.conn.send_response(sid, obj.header())
            if h.checksums and obj.checksums:
                self.conn.send_checksums(sid, 0, obj.checksums)
            self.conn.end_stream(sid)
        else:
            assert obj is not None
            rng = resolve_range(h, len(obj.data))
            self.conn.send_response(sid, obj.header(offset=rng.offset, length=rng.length))
            blocks = blocks_touched(rng.offset, rng.length, obj.block_size)
            if blocks:
                self.conn.send_checksums(
                    sid, blocks.start, obj.checksums[blocks.start : blocks.stop]
                )
            view = memoryview(obj.data)[rng.offset : rng.end]
            for pos in range(0, len(view), self.chunk):
                self.conn.send_data(sid, view[pos : pos + self.chunk])
            self.conn.end_stream(sid)

    def _commit(self, sid: int) -> None:
        upload = self.uploads.pop(sid)
        h = upload.header
        try:
            checksums, sha = upload.digester.finish()
        except IntegrityError as exc:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, exc.reason) from None
        if h.content_length is not None and h.content_length != upload.digester.size:
            raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, "body length != content_length")
        for claimed in (h.sha256, upload.trailer_sha):
            if claimed is not None and claimed != sha:
                raise RequestError(ErrorCode.QS_INTEGRITY_ERROR, "body SHA-256 mismatch")
        assert h.key is not None
        current = self.objects.get((h.bucket, h.key))
        check_conditions(h, current.etag if current else None)
        obj = StoredObject(
            bytes(upload.body),
            etag_from_sha256(sha),
            int(self.clock() * 1e9),
            upload.digester.block_size,
            checksums,
            sha,
            h.content_type,
            h.meta,
        )
        self.objects[(h.bucket, h.key)] = obj
        self.conn.send_response(sid, obj.header(), end_stream=True)

    def _list(self, sid: int, h: RequestHeader, limit: int) -> None:
        prefix = h.prefix or ""
        keys = sorted(k for b, k in self.objects if b == h.bucket and k.startswith(prefix))
        if h.continuation is not None:
            if not h.continuation.startswith("after:"):
                raise RequestError(ErrorCode.QS_BAD_REQUEST, "bad continuation")
            keys = [k for k in keys if k > h.continuation[6:]]
        page = keys[:limit]
        entries = []
        for k in page:
            o = self.objects[(h.bucket, k)]
            entries.append(ListEntry(key=k, size=len(o.data), etag=o.etag, mtime_ns=o.mtime_ns))
        nxt = f"after:{page[-1]}" if len(keys) > limit else None
        self.conn.send_listing(sid, Listing(entries=entries, next=nxt))


class InMemoryPair:
    """A connected client and server under a fake clock (seconds, starting at 1000)."""

    def __init__(
        self, *, server_settings: Settings | None = None, authorizer: Authorizer | None = None
    ) -> None:
        self.now = 1000.0
        cert_pem, key_pem = test_certificate()
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], server_name="localhost"
        )
        client_config.load_verify_locations(cadata=cert_pem)
        server_config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        server_config.certificate = x509.load_pem_x509_certificate(cert_pem)
        server_config.private_key = serialization.load_pem_private_key(key_pem, None)  # type: ignore[assignment]
        self.client_quic = QuicConnection(configuration=client_config)
        self.client_quic.connect(SERVER_ADDR, now=self.now)
        self.server_quic = QuicConnection(
            configuration=server_config,
            original_destination_connection_id=self.client_quic.original_destination_connection_id,
        )
        self.client = QuicstoreConnection(self.client_quic, is_client=True)
        self.server = QuicstoreConnection(
            self.server_quic, is_client=False, settings=server_settings
        )
        self.responder = Responder(
            self.server, lambda: self.now, authorizer or Authorizer(open_access=True)
        )
        self.client_events: list[ev.Event] = []
        self.server_events: list[ev.Event] = []
        self.datagrams = 0

    def _drain(self) -> None:
        while (qev := self.server_quic.next_event()) is not None:
            for e in self.server.handle_event(qev):
                self.server_events.append(e)
                self.responder.handle(e)
        while (qev := self.client_quic.next_event()) is not None:
            self.client_events.extend(self.client.handle_event(qev))

    def _transfer(self) -> bool:
        moved = False
        for data, _ in self.client_quic.datagrams_to_send(now=self.now):
            self.server_quic.receive_datagram(data, CLIENT_ADDR, now=self.now)
            moved = True
            self.datagrams += 1
        for data, _ in self.server_quic.datagrams_to_send(now=self.now):
            self.client_quic.receive_datagram(data, SERVER_ADDR, now=self.now)
            moved = True
            self.datagrams += 1
        return moved

    def run_until(self, done: Callable[[], bool], max_seconds: float = 120.0) -> None:
        """Move datagrams and fire timers (advancing the fake clock) until ``done()``."""
        deadline = self.now + max_seconds
        while True:
            self._drain()
            if done():
                return
            if self._transfer():
                continue
            timers = [
                t
                for t in (self.client_quic.get_timer(), self.server_quic.get_timer())
                if t is not None
            ]
            if not timers or self.now >= deadline:
                raise AssertionError(f"stalled at fake time {self.now:.3f}")
            self.now = max(self.now, min(timers))
            for quic in (self.client_quic, self.server_quic):
                timer = quic.get_timer()
                if timer is not None and timer <= self.now:
                    quic.handle_timer(now=self.now)

    def events_for(self, stream_id: int) -> list[ev.Event]:
        return [e for e in self.client_events if getattr(e, "stream_id", None) == stream_id]

    def finished(self, stream_id: int) -> bool:
        return any(
            isinstance(e, ev.StreamEnded | ev.StreamReset | ev.StreamAbandoned)
            for e in self.events_for(stream_id)
        )

    def request(
        self, header: RequestHeader, body: bytes | None = None, *, trailer_sha: bool = False
    ) -> list[ev.Event]:
        """Send one request (with a PUT body) and run until its response is complete."""
        sid = self.client.send_request(header)
        if header.op == "PUT":
            for pos in range(0, len(body or b""), 7000):
                self.client.send_data(sid, (body or b"")[pos : pos + 7000])
            if trailer_sha:
                from quicstore.proto.messages import Trailer

                self.client.send_trailer(sid, Trailer(sha256=hashlib.sha256(body or b"").digest()))
            else:
                self.client.end_stream(sid)
        self.run_until(lambda: self.finished(sid))
        return self.events_for(sid)
