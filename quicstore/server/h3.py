"""The HTTP/3 front end of the gateway (spec/quicstore-h3.md), and hq-interop for interop.

Each HTTP request is translated into the native request it stands for (a RequestHeader) and
runs through the same validation, token check, conditions, ranges, store operations, read
streaming and atomic PUT as quicstore/1; only the framing of the answer differs: status
codes and header fields instead of RESPONSE/ERROR frames, checksums in header fields when
asked for, JSON listings and error bodies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from aioquic.h0.connection import H0Connection
from aioquic.h3 import events as h3e
from aioquic.h3.connection import ErrorCode as H3Error
from aioquic.h3.connection import H3Connection, Setting
from aioquic.quic import events as qe

from ..proto.codes import ErrorCode, describe_error_code
from ..proto.errors import RequestError
from ..proto.frames import encode_frame_header
from ..proto.integrity import blocks_touched, pack_checksums, unpack_checksums
from ..proto.messages import (
    OP_DELETE,
    OP_GET,
    OP_HEAD,
    OP_LIST,
    OP_PUT,
    RequestHeader,
    encode_meta,
)
from ..proto.semantics import (
    ByteRange,
    list_page_limit,
    resolve_range,
    validate_request,
)
from ..store.base import ObjectInfo
from ..transport import compat
from ..transport.endpoint import QuicDriver
from .gateway import Gateway, StreamingSession, _GetStreamer, _Request

log = logging.getLogger("quicstore.h3")
access_log = logging.getLogger("quicstore.access")

ALPN_HQ = "hq-interop"
"""HTTP/0.9 over QUIC, as the QUIC interop runner uses it."""

STATUS_OF_CODE: dict[int, int] = {
    ErrorCode.QS_INTERNAL_ERROR: 500,
    ErrorCode.QS_EXCESSIVE_LOAD: 429,
    ErrorCode.QS_REQUEST_REJECTED: 503,
    ErrorCode.QS_MESSAGE_ERROR: 400,
    ErrorCode.QS_REQUEST_TIMEOUT: 408,
    ErrorCode.QS_BAD_REQUEST: 400,
    ErrorCode.QS_UNAUTHENTICATED: 401,
    ErrorCode.QS_TOKEN_EXPIRED: 401,
    ErrorCode.QS_FORBIDDEN: 403,
    ErrorCode.QS_NOT_FOUND: 404,
    ErrorCode.QS_PRECONDITION_FAILED: 412,
    ErrorCode.QS_NOT_MODIFIED: 304,
    ErrorCode.QS_RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.QS_INVALID_KEY: 400,
    ErrorCode.QS_KEY_TOO_LONG: 414,
    ErrorCode.QS_METADATA_TOO_LARGE: 431,
    ErrorCode.QS_OBJECT_TOO_LARGE: 413,
    ErrorCode.QS_INTEGRITY_ERROR: 422,
    ErrorCode.QS_INSUFFICIENT_STORAGE: 507,
    ErrorCode.QS_TOO_EARLY: 425,
    ErrorCode.QS_UNAVAILABLE: 503,
}
"""HTTP status of each native request error (spec/quicstore-h3.md Section 9.2)."""

_RAW_PATH = re.compile(rb"/[\x21-\x22\x24-\x7e]*")
_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ETAG_ELEMENT = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]{1,128})"\s*')
_QUERY_NAMES = frozenset({"prefix", "delimiter", "continuation", "limit", "list"})
_META_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


class HttpError(Exception):
    """An HTTP answer other than success: a native code plus what HTTP adds to it."""

    def __init__(
        self,
        code: int,
        message: str = "",
        *,
        status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_OF_CODE.get(code, 500)
        self.headers = headers or []


class GatewayH3Connection(H3Connection):
    """aioquic's H3Connection with the gateway's SETTINGS (spec Section 2.3): no extended
    CONNECT, no datagrams, and MAX_FIELD_SECTION_SIZE announced."""

    def __init__(self, quic: Any, max_field_section_size: int) -> None:
        self.max_field_section_size = max_field_section_size
        super().__init__(quic)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        settings.pop(Setting.H3_DATAGRAM, None)
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.max_field_section_size
        return settings


@dataclass
class _HttpRequest:
    stream_id: int
    method: str
    headers: dict[str, list[str]]
    started: float
    native: RequestHeader | None = None
    body: deque[bytes] = field(default_factory=deque)
    body_ready: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    trailer_sha: bytes | None = None
    task: asyncio.Task[None] | None = None
    early: bool = False
    status: int = 0
    bytes_out: int = 0

    def first(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def _etag_list(value: str) -> list[tuple[bool, str]] | None:
    """Parse an If-Match / If-None-Match value: None for ``*``, else [(weak, tag), ...]."""
    value = value.strip()
    if value == "*":
        return None
    tags = []
    for element in value.split(","):
        match = _ETAG_ELEMENT.fullmatch(element)
        if not match:
            raise HttpError(ErrorCode.QS_BAD_REQUEST, "malformed entity-tag")
        tags.append((bool(match.group(1)), match.group(2)))
    if not tags:
        raise HttpError(ErrorCode.QS_BAD_REQUEST, "empty entity-tag list")
    return tags


def check_http_conditions(op: str, headers: dict[str, list[str]], etag: str | None) -> None:
    """Spec Section 6: If-Match (strong) then If-None-Match (weak), lists allowed."""
    if_match = headers.get("if-match")
    if if_match:
        tags = _etag_list(",".join(if_match))
        ok = etag is not None and (
            tags is None or any(not weak and tag == etag for weak, tag in tags)
        )
        if not ok:
            raise HttpError(ErrorCode.QS_PRECONDITION_FAILED, "if-match failed")
    if_none = headers.get("if-none-match")
    if if_none and op != OP_DELETE:
        tags = _etag_list(",".join(if_none))
        matched = etag is not None and (tags is None or any(tag == etag for _, tag in tags))
        if matched:
            if op in (OP_GET, OP_HEAD):
                raise HttpError(
                    ErrorCode.QS_NOT_MODIFIED,
                    "not modified",
                    headers=[(b"etag", f'"{etag}"'.encode())],
                )
            raise HttpError(ErrorCode.QS_PRECONDITION_FAILED, "if-none-match failed")
    if etag is None and op in (OP_GET, OP_HEAD, OP_DELETE):
        raise HttpError(ErrorCode.QS_NOT_FOUND, "no such object")


def parse_range(value: str | None) -> dict[str, int] | None:
    """The first range-spec of a ``bytes=`` Range as native fields; None if absent or
    ignorable (another unit, bad syntax); {"suffix": 0} for ``bytes=-0`` (416)."""
    if value is None:
        return None
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes" or not specs:
        return None
    parsed: list[dict[str, int]] = []
    for spec in specs.split(","):
        first, dash, last = spec.strip().partition("-")
        if not dash:
            return None
        try:
            if not first:
                parsed.append({"suffix": int(last)})
            elif not last:
                parsed.append({"offset": int(first)})
            else:
                lo, hi = int(first), int(last)
                if hi < lo:
                    return None
                parsed.append({"offset": lo, "length": hi - lo + 1})
        except ValueError:
            return None
    return parsed[0] if len(parsed) == 1 else {"_multi": 1, **parsed[0]}


class H3Session(StreamingSession):
    """One h3 (or hq-interop) connection on the gateway."""

    def __init__(self, gateway: Gateway, driver: QuicDriver, alpn: str) -> None:
        self._init_streaming(gateway, driver)
        self.alpn = alpn
        self.hq = alpn == ALPN_HQ
        self.h: H3Connection | H0Connection = (
            H0Connection(self.quic)
            if self.hq
            else GatewayH3Connection(self.quic, self.config.settings.max_frame_size)
        )
        self.requests: dict[int, _HttpRequest] = {}
        self._ended = False
        driver.transmit_soon()

    # -- plumbing

    def send_body(
        self, stream_id: int, data: memoryview, release: Callable[[], None] | None = None
    ) -> bool:
        if stream_id not in self.requests or self.closing:
            return False
        try:
            if not self.hq:
                # An HTTP/3 DATA frame written directly: aioquic's send_data would copy the
                # payload into a new frame first (and takes no memoryview).
                self.quic.send_stream_data(stream_id, encode_frame_header(0x00, len(data)))
            if release is not None and isinstance(self.quic, compat.AppPacedQuicConnection):
                self.quic.send_stream_view(stream_id, data, release)
                return True
            self.quic.send_stream_data(stream_id, data)  # type: ignore[arg-type]
        except (ValueError, RuntimeError):
            return False  # the stream was reset or stopped meanwhile
        if release is not None:
            release()
        return True

    def go_away(self) -> None:
        """aioquic 1.7.2's H3Connection cannot send GOAWAY: in-flight requests finish and
        the connection is then closed with H3_NO_ERROR (Gateway.shutdown)."""

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.quic.close(error_code=H3Error.H3_NO_ERROR, reason_phrase=reason)
            self.driver.transmit()
        self._end()

    # -- events

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.HandshakeCompleted):
            self.handshake_done.set()
        elif isinstance(event, qe.ConnectionTerminated):
            self._end()
            return
        elif isinstance(event, qe.StreamReset | qe.StopSendingReceived):
            req = self.requests.get(event.stream_id)
            if req is not None and req.task is not None:
                req.task.cancel()
        for h_event in self.h.handle_event(event):
            if isinstance(h_event, h3e.HeadersReceived):
                self._headers(h_event)
            elif isinstance(h_event, h3e.DataReceived):
                req = self.requests.get(h_event.stream_id)
                if req is not None:
                    if h_event.data:
                        req.body.append(h_event.data)
                    req.ended = req.ended or h_event.stream_ended
                    req.body_ready.set()

    def _headers(self, event: h3e.HeadersReceived) -> None:
        req = self.requests.get(event.stream_id)
        if req is not None:  # a trailer section
            for name, value in event.headers:
                if name == b"x-quicstore-sha256":
                    req.trailer_sha = _sha_field(value.decode("latin-1"))
            req.ended = req.ended or event.stream_ended
            req.body_ready.set()
            return
        headers: dict[str, list[str]] = {}
        for name, value in event.headers:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        method = (headers.get(":method") or ["GET"])[0]
        req = _HttpRequest(
            event.stream_id,
            method,
            headers,
            time.perf_counter(),
            ended=event.stream_ended,
            early=not self.handshake_done.is_set(),
        )
        self.requests[event.stream_id] = req
        self.gateway.metrics.streams_open += 1
        req.task = asyncio.get_running_loop().create_task(self._run(req))

    # -- requests

    async def _run(self, req: _HttpRequest) -> None:
        outcome = "ok"
        try:
            await self._serve(req)
        except HttpError as exc:
            outcome = describe_error_code(exc.code)
            self._error(req, exc)
        except RequestError as exc:
            outcome = describe_error_code(exc.code)
            self._error(req, HttpError(exc.code, exc.reason))
        except asyncio.CancelledError:
            outcome = "cancelled"
            self._reset(req, H3Error.H3_REQUEST_CANCELLED)
        except Exception:
            outcome = "QS_INTERNAL_ERROR"
            log.exception("h3 request on stream %d failed", req.stream_id)
            self._error(req, HttpError(ErrorCode.QS_INTERNAL_ERROR, "internal error"))
        finally:
            self.requests.pop(req.stream_id, None)
            self.active_gets.discard(req.stream_id)
            self.gateway.metrics.streams_open -= 1
            op = req.native.op if req.native else req.method[:8]
            self.gateway.metrics.requests[f"h3 {op} {outcome}"] += 1
            self.gateway.metrics.request_finished(
                self.alpn, op, outcome, time.perf_counter() - req.started
            )
            if outcome not in ("ok", "QS_NOT_MODIFIED"):
                self.gateway.metrics.errors[outcome] += 1
            self.driver.transmit_soon()
            if access_log.isEnabledFor(logging.INFO):
                native = req.native
                access_log.info(
                    json.dumps(
                        {
                            "proto": self.alpn,
                            "op": native.op if native else req.method[:8],
                            "bucket": (native.bucket if native else "")[:64],
                            "key": ((native.key or native.prefix or "") if native else "")[:256],
                            "stream": req.stream_id,
                            "status": req.status,
                            "bytes_out": req.bytes_out,
                            "ms": round((time.perf_counter() - req.started) * 1000, 3),
                            "outcome": outcome,
                        }
                    )
                )

    def _reset(self, req: _HttpRequest, code: int) -> None:
        if self.closing:
            return
        try:
            self.quic.reset_stream(req.stream_id, code)
        except ValueError:
            return
        if not req.ended:
            with contextlib.suppress(ValueError):
                self.quic.stop_stream(req.stream_id, code)

    def _respond(
        self,
        req: _HttpRequest,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        end: bool = True,
    ) -> None:
        req.status = status
        if self.hq:  # HTTP/0.9: no status line, no header fields
            if body:
                self.h.send_data(req.stream_id, body, end_stream=end)
            elif end:
                self.h.send_data(req.stream_id, b"", end_stream=True)
            return
        all_headers = [(b":status", str(status).encode()), (b"server", b"quicstore"), *headers]
        if body is not None:
            all_headers.append((b"content-length", str(len(body)).encode()))
        self.h.send_headers(req.stream_id, all_headers, end_stream=end and not body)
        if body:
            self.h.send_data(req.stream_id, body, end_stream=end)
        self.driver.transmit_soon()
        if not req.ended and end:
            # A response before the whole request: tell the client to stop sending.
            with contextlib.suppress(ValueError):
                self.quic.stop_stream(req.stream_id, H3Error.H3_NO_ERROR)

    def _error(self, req: _HttpRequest, exc: HttpError) -> None:
        if req.status:  # headers already sent: only a reset can signal
            self._reset(req, H3Error.H3_INTERNAL_ERROR)
            return
        if self.hq:
            self._reset(req, H3Error.H3_REQUEST_REJECTED)
            return
        headers = list(exc.headers)
        name = describe_error_code(exc.code)
        if exc.status == 304:
            self._respond(req, 304, [*headers, (b"cache-control", b"no-cache")])
            return
        headers += [
            (b"x-quicstore-error", name.encode()),
            (b"cache-control", b"no-store"),
            (b"content-type", b"application/json"),
        ]
        if exc.status == 401:
            challenge = 'Bearer error="invalid_token"'
            if exc.code == ErrorCode.QS_TOKEN_EXPIRED:
                challenge += ', error_description="token expired"'
            elif "required" in exc.message:
                challenge = "Bearer"
            headers.append((b"www-authenticate", challenge.encode()))
        elif exc.status == 403:
            headers.append((b"www-authenticate", b'Bearer error="insufficient_scope"'))
        elif exc.status in (429, 503):
            headers.append((b"retry-after", b"1"))
        body = json.dumps(
            {"code": name, "code_value": int(exc.code), "message": exc.message}
        ).encode()
        native = req.native
        self._respond(
            req, exc.status, headers, None if native is not None and native.op == OP_HEAD else body
        )

    def _target(self, req: _HttpRequest) -> tuple[str, str | None, str | None]:
        """(kind, bucket, key) from ``:path`` (spec Section 3.1); kind is root, bucket or
        object. With ``h3_root_bucket`` configured, ``/<key>`` names a key of that bucket."""
        path = (req.first(":path") or "").encode("latin-1")
        raw, _, query = path.partition(b"?")
        if not _RAW_PATH.fullmatch(raw) or _PERCENT.search(raw):
            raise HttpError(ErrorCode.QS_INVALID_KEY, "malformed path")
        root_bucket = self.config.h3_root_bucket
        if raw == b"/":
            return ("root", root_bucket, None) if not query else ("bucket", root_bucket, None)
        rest = raw[1:]
        if root_bucket is not None:
            return "object", root_bucket, _decode(rest)
        bucket, slash, key = rest.partition(b"/")
        if not slash or not key:
            return "bucket", _decode(bucket), None
        return "object", _decode(bucket), _decode(key)

    def _query(self, req: _HttpRequest) -> dict[str, str]:
        path = req.first(":path") or ""
        _, _, query = path.partition("?")
        params: dict[str, str] = {}
        for part in query.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            try:
                name = _form_decode(name)
                value = _form_decode(value)
            except ValueError:
                raise HttpError(ErrorCode.QS_MESSAGE_ERROR, "malformed query") from None
            if name not in _QUERY_NAMES:
                raise HttpError(ErrorCode.QS_BAD_REQUEST, f"unknown query parameter {name!r}")
            if name in params:
                raise HttpError(ErrorCode.QS_BAD_REQUEST, f"{name} given twice")
            params[name] = value
        return params

    def _token(self, req: _HttpRequest) -> str | None:
        values = req.headers.get("authorization")
        if not values:
            return None
        if len(values) > 1:
            raise HttpError(ErrorCode.QS_UNAUTHENTICATED, "more than one authorization field")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token or len(token) > 4096:
            raise HttpError(ErrorCode.QS_UNAUTHENTICATED, "malformed token")
        return token

    async def _serve(self, req: _HttpRequest) -> None:
        if ":protocol" in req.headers:
            self._reset(req, H3Error.H3_MESSAGE_ERROR)  # extended CONNECT is not provided
            return
        kind, bucket, key = self._target(req)
        method = req.method
        allowed = {
            "object": ("GET", "HEAD", "PUT", "DELETE"),
            "bucket": ("GET", "HEAD"),
            "root": ("GET", "HEAD"),
        }[kind]
        if method not in allowed:
            raise HttpError(
                ErrorCode.QS_BAD_REQUEST,
                f"{method} not allowed here",
                status=405,
                headers=[(b"allow", ", ".join(allowed).encode())],
            )
        if req.early and method in ("PUT", "DELETE"):
            raise HttpError(ErrorCode.QS_TOO_EARLY, "not applied from early data")
        if kind == "root":
            await self._service_document(req)
            return
        assert bucket is not None
        token = self._token(req)
        if kind == "bucket":
            await self._list(req, bucket, token)
            return
        assert key is not None
        op = {"GET": OP_GET, "HEAD": OP_HEAD, "PUT": OP_PUT, "DELETE": OP_DELETE}[method]
        if "?" in (req.first(":path") or "") and self.config.h3_root_bucket is None:
            raise HttpError(ErrorCode.QS_BAD_REQUEST, "no query on an object URL")
        fields: dict[str, Any] = {}
        if op == OP_PUT:
            fields.update(self._put_fields(req))
        native = RequestHeader(op=op, bucket=bucket, key=key, token=token, **fields)
        req.native = native
        validate_request(native, self.config.settings)
        self.gateway.authorizer.check(token, op, bucket, key, time.time())
        if op in (OP_GET, OP_HEAD):
            await self._get(req, native)
        elif op == OP_PUT:
            await self._put(req, native)
        else:
            await self._delete(req, native)

    async def _service_document(self, req: _HttpRequest) -> None:
        s = self.config.settings
        doc = {
            "protocol": "quicstore/1",
            **{
                name: value
                for name, value in (
                    (sid_name.lower(), v)
                    for sid_name, v in (
                        ("MAX_KEY_LENGTH", s.max_key_length),
                        ("MAX_METADATA_SIZE", s.max_metadata_size),
                        ("MAX_CONCURRENT_REQUESTS", s.max_concurrent_requests),
                        ("BLOCK_SIZE", s.block_size),
                        ("MAX_OBJECT_SIZE", s.max_object_size),
                        ("MAX_LIST_PAGE", s.max_list_page),
                        ("CHUNK_SIZE", s.chunk_size),
                    )
                )
            },
            "max_field_section_size": s.max_frame_size,
        }
        body = json.dumps(doc).encode()
        self._respond(
            req,
            200,
            [(b"content-type", b"application/json")],
            None if req.method == "HEAD" else body,
        )

    def _object_headers(self, info: ObjectInfo) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"etag", f'"{info.etag}"'.encode()),
            (
                b"last-modified",
                email.utils.formatdate(info.mtime_ns // 1_000_000_000, usegmt=True).encode(),
            ),
            (b"x-quicstore-mtime-ns", str(info.mtime_ns).encode()),
            (b"x-quicstore-size", str(info.size).encode()),
            (b"x-quicstore-block-size", str(info.block_size).encode()),
            (b"x-quicstore-sha256", info.sha256.hex().encode()),
            (b"content-type", (info.content_type or "application/octet-stream").encode()),
            (b"accept-ranges", b"bytes"),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]
        omitted = 0
        for name, value in (info.meta or {}).items():
            if _META_NAME.fullmatch(name) and value == value.strip() and value.isprintable():
                headers.append((f"x-quicstore-meta-{name}".encode(), value.encode()))
            else:
                omitted += 1
        if omitted:
            headers.append((b"x-quicstore-meta-omitted", str(omitted).encode()))
        return headers

    async def _get(self, req: _HttpRequest, native: RequestHeader) -> None:
        assert native.key is not None
        want = req.first("x-quicstore-want-checksums")
        if want not in (None, "0", "1"):
            raise HttpError(ErrorCode.QS_MESSAGE_ERROR, "x-quicstore-want-checksums: 0 or 1")
        reader = await self.gateway.store.open(native.bucket, native.key)
        try:
            info = reader.info
            check_http_conditions(native.op, req.headers, info.etag)
            headers = self._object_headers(info)
            status = 200
            rng = ByteRange(0, info.size)
            if native.op == OP_GET:
                requested = parse_range(req.first("range"))
                if_range = req.first("if-range")
                if (
                    requested is not None
                    and if_range is not None
                    and (if_range.strip() != f'"{info.etag}"')
                ):
                    requested = None  # If-Range does not hold: the whole object
                if requested is not None:
                    requested.pop("_multi", None)
                    if requested.get("suffix") == 0:
                        raise HttpError(
                            ErrorCode.QS_RANGE_NOT_SATISFIABLE,
                            "empty suffix",
                            headers=[(b"content-range", f"bytes */{info.size}".encode())],
                        )
                    ranged = RequestHeader(
                        op=OP_GET,
                        bucket=native.bucket,
                        key=native.key,
                        offset=requested.get("offset"),
                        length=requested.get("length"),
                        suffix=requested.get("suffix"),
                    )
                    try:
                        rng = resolve_range(ranged, info.size)
                    except RequestError as exc:
                        raise HttpError(
                            exc.code,
                            exc.reason,
                            headers=[(b"content-range", f"bytes */{info.size}".encode())],
                        ) from None
                    if info.size:
                        status = 206
                        headers.append(
                            (
                                b"content-range",
                                f"bytes {rng.offset}-{rng.end - 1}/{info.size}".encode(),
                            )
                        )
            headers.append((b"content-length", str(rng.length).encode()))
            if want == "1":
                headers += await self._checksum_headers(reader, info, native.op, rng, headers)
            if native.op == OP_HEAD or rng.length == 0:
                self._respond(req, status, headers)
                return
            self._respond(req, status, headers, end=False)
            self.active_gets.add(req.stream_id)
            shim = _Request(req.stream_id, native, req.started)
            await _GetStreamer(self, shim, reader, rng.offset, rng.length).run()
            req.bytes_out = shim.bytes_out
            self.h.send_data(req.stream_id, b"", end_stream=True)
        finally:
            await reader.close()

    async def _checksum_headers(
        self,
        reader: Any,
        info: ObjectInfo,
        op: str,
        rng: ByteRange,
        headers: list[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]]:
        """Spec Section 7.2: all the covered blocks' CRCs if they fit, else how many would."""
        blocks = (
            range(0, -(-info.size // info.block_size))
            if op == OP_HEAD
            else blocks_touched(rng.offset, rng.length, info.block_size)
        )
        if not len(blocks):
            return []
        limit = self.config.settings.max_frame_size
        used = sum(len(n) + len(v) + 32 for n, v in headers) + 200
        room = (
            limit
            - used
            - (len(b"x-quicstore-checksums-first-block") + 20 + 32)
            - (len(b"x-quicstore-checksums") + 32)
        )
        fits = max(0, room * 3 // 16)  # base64: 4 chars per 3 bytes, 4 bytes per checksum
        if len(blocks) > fits:
            return [(b"x-quicstore-checksums-max-blocks", str(fits).encode())]
        packed = await reader.read_checksums(blocks.start, len(blocks))
        return [
            (b"x-quicstore-checksums-first-block", str(blocks.start).encode()),
            (b"x-quicstore-checksums", base64.b64encode(packed)),
        ]

    def _put_fields(self, req: _HttpRequest) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        encoding = req.first("content-encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise HttpError(
                ErrorCode.QS_BAD_REQUEST,
                "content codings are not accepted",
                status=415,
                headers=[(b"accept-encoding", b"identity")],
            )
        if "content-range" in req.headers:
            raise HttpError(ErrorCode.QS_BAD_REQUEST, "content-range on PUT")
        length = req.first("content-length")
        if length is not None:
            if not length.isdigit():
                raise HttpError(ErrorCode.QS_MESSAGE_ERROR, "content-length")
            fields["content_length"] = int(length)
        if req.first("content-type"):
            fields["content_type"] = req.first("content-type")
        sha = req.first("x-quicstore-sha256")
        if sha is not None:
            fields["sha256"] = _sha_field(sha)
        meta: dict[str, str] = {}
        for name, values in req.headers.items():
            if name.startswith("x-quicstore-meta-"):
                meta_name = name[len("x-quicstore-meta-") :]
                if not meta_name or len(values) > 1:
                    raise HttpError(ErrorCode.QS_BAD_REQUEST, "bad metadata field")
                meta[meta_name] = values[0].encode("latin-1").decode("utf-8", "strict")
        if meta:
            if len(encode_meta(meta)) > self.config.settings.max_metadata_size:
                raise HttpError(ErrorCode.QS_METADATA_TOO_LARGE, "metadata too large")
            fields["meta"] = meta
        return fields

    async def _put(self, req: _HttpRequest, native: RequestHeader) -> None:
        assert native.key is not None
        store = self.gateway.store
        try:
            current: str | None = (await store.stat(native.bucket, native.key)).etag
        except RequestError as exc:
            if exc.code != ErrorCode.QS_NOT_FOUND:
                raise
            current = None
        check_http_conditions(OP_PUT, req.headers, current)
        writer = await store.create(
            native.bucket,
            native.key,
            block_size=self.config.settings.block_size,
            content_type=native.content_type,
            meta=native.meta,
        )
        limit = self.config.settings.max_object_size
        try:
            while True:
                while not req.body and not req.ended:
                    req.body_ready.clear()
                    await req.body_ready.wait()
                if req.body:
                    batch = list(req.body)
                    req.body.clear()
                    size = sum(len(b) for b in batch)
                    if limit and writer.size + size > limit:
                        raise HttpError(ErrorCode.QS_OBJECT_TOO_LARGE, "body too large")
                    await writer.write(batch)
                    self.gateway.metrics.bytes_received += size
                elif req.ended:
                    break
            if native.content_length is not None and writer.size != native.content_length:
                self._reset(req, H3Error.H3_MESSAGE_ERROR)  # RFC 9114, 4.1.2: malformed
                raise asyncio.CancelledError
            if (
                native.sha256 is not None
                and req.trailer_sha is not None
                and native.sha256 != req.trailer_sha
            ):
                # The body must match both: it cannot.
                raise HttpError(ErrorCode.QS_INTEGRITY_ERROR, "digest fields disagree")
            existed = current is not None
            info = await writer.commit(
                sha256=req.trailer_sha or native.sha256,
                content_length=native.content_length,
                condition=lambda etag: _commit_condition(req.headers, etag),
            )
        except BaseException:
            await writer.abort()
            raise
        headers = [
            h
            for h in self._object_headers(info)
            if h[0]
            not in (b"content-type", b"accept-ranges", b"cache-control", b"x-content-type-options")
            and not h[0].startswith(b"x-quicstore-meta")
        ]
        self._respond(req, 204 if existed else 201, headers)

    async def _delete(self, req: _HttpRequest, native: RequestHeader) -> None:
        assert native.key is not None
        if "if-none-match" in req.headers:
            raise HttpError(ErrorCode.QS_BAD_REQUEST, "DELETE does not take if-none-match")
        info = await self.gateway.store.delete(
            native.bucket,
            native.key,
            lambda etag: check_http_conditions(OP_DELETE, req.headers, etag),
        )
        self._respond(req, 204, [(b"x-quicstore-deleted-etag", f'"{info.etag}"'.encode())])

    async def _list(self, req: _HttpRequest, bucket: str, token: str | None) -> None:
        params = self._query(req)
        limit = params.get("limit")
        if limit is not None and not limit.isdigit():
            raise HttpError(ErrorCode.QS_MESSAGE_ERROR, "limit must be decimal digits")
        native = RequestHeader(
            op=OP_LIST,
            bucket=bucket,
            token=token,
            prefix=params.get("prefix") or None,
            delimiter=params.get("delimiter"),
            continuation=params.get("continuation"),
            limit=int(limit) if limit is not None else None,
        )
        req.native = native
        validate_request(native, self.config.settings)
        self.gateway.authorizer.check(token, OP_LIST, bucket, native.prefix or "", time.time())
        page = await self.gateway.store.list(
            bucket,
            prefix=native.prefix or "",
            delimiter=native.delimiter,
            continuation=native.continuation,
            limit=list_page_limit(native, self.config.settings),
        )
        doc: dict[str, Any] = {
            "entries": [
                {"key": e.key, "size": e.size, "etag": e.etag, "mtime_ns": e.mtime_ns}
                for e in page.entries
            ],
            "prefixes": page.prefixes,
        }
        if page.next is not None:
            doc["next"] = page.next
        body = json.dumps(doc).encode()
        self._respond(
            req,
            200,
            [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
            None if req.method == "HEAD" else body,
        )


def _commit_condition(headers: dict[str, list[str]], etag: str | None) -> None:
    try:
        check_http_conditions(OP_PUT, headers, etag)
    except HttpError as exc:
        raise RequestError(exc.code, exc.message) from None


def _sha_field(value: str) -> bytes:
    value = value.strip()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise HttpError(ErrorCode.QS_MESSAGE_ERROR, "x-quicstore-sha256 must be 64 hex digits")
    return bytes.fromhex(value)


def _decode(raw: bytes) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(ErrorCode.QS_INVALID_KEY, "name is not UTF-8") from None


def _form_decode(text: str) -> str:
    raw = text.replace("+", " ").encode("latin-1")
    if _PERCENT.search(raw):
        raise ValueError("stray %")
    return unquote_to_bytes(raw).decode("utf-8")


__all__ = [
    "ALPN_HQ",
    "H3Session",
    "check_http_conditions",
    "pack_checksums",
    "parse_range",
    "unpack_checksums",
]
