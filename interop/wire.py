"""A wire tap between client and server, and an offline analysis of what it saw.

This plays the part of the interop runner's pcap: every test runs with the tap on the path
(client -> tap -> [impairment proxy ->] server). The tap is a NAT-like UDP relay (one upstream
socket per client address) that records each datagram's arrival time and direction, keeping long
header datagrams whole and the first ``SHORT_PREFIX`` bytes of short header ones (enough to remove
header protection and read the key phase bit).

The analysis (``analyze``) then reads, per connection:

* cleartext headers: versions, packet types (Initial, 0-RTT, Handshake, Retry, VN, 1-RTT), CIDs,
  tokens;
* the Initial packets, decrypted with the public Initial keys (RFC 9001 5.2, RFC 9369 3.3.1):
  ClientHello (cipher suites, ALPN and extensions offered) and ServerHello (cipher suite chosen,
  pre_shared_key = resumption accepted);
* with the endpoints' SSLKEYLOGFILE secrets: Handshake packets (EncryptedExtensions: ALPN chosen,
  early_data = 0-RTT accepted; Certificate sent or not), 0-RTT packets (which frames they carry)
  and the key phase bit of every 1-RTT packet (header protection removed; key updates).

Decryption uses aioquic's packet and crypto modules as a library. Times are in seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.crypto import CryptoContext, CryptoError, CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import CipherSuite

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF
"""QUIC v2 (RFC 9369)."""

SHORT_PREFIX = 64
"""Bytes kept of a short header datagram (header + header protection sample fit in 41)."""

TLS_EXT_ALPN = 16
TLS_EXT_PSK = 41
TLS_EXT_EARLY_DATA = 42
TLS_EXT_SUPPORTED_VERSIONS = 43
TLS_EXT_QUIC_TP = 57

CIPHER_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
}

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# The tap
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Datagram:
    """One relayed datagram: arrival time (s, monotonic), direction, session, kept bytes."""

    t: float
    c2s: bool
    session: int
    size: int
    data: bytes


class LoopThread:
    """An asyncio event loop in a daemon thread, for the in-process relays of a run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run ``coro`` on the loop and wait up to ``timeout`` seconds for its result."""
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread (bounded: 5 s)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)


class WireTap:
    """A recording UDP relay: clients talk to ``port``, the tap forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.records: list[Datagram] = []
        self._sock: socket.socket | None = None
        self._sessions: dict[tuple[str, int], tuple[int, socket.socket]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_records = 2_000_000
        """Memory bound: datagrams beyond this are relayed but not recorded."""

    async def start(self) -> int:
        """Bind the listening socket; returns its port."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _buffers(sock)
        sock.bind((self.host, 0))
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._on_client_readable)
        return self.port

    async def close(self) -> None:
        """Close every socket."""
        assert self._loop is not None
        for _, up in self._sessions.values():
            self._loop.remove_reader(up.fileno())
            up.close()
        self._sessions.clear()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _record(self, c2s: bool, session: int, data: bytes) -> None:
        if len(self.records) >= self.max_records:
            return
        kept = data if data and data[0] & 0x80 else data[:SHORT_PREFIX]
        self.records.append(Datagram(time.monotonic(), c2s, session, len(data), kept))

    def _on_client_readable(self) -> None:
        assert self._sock is not None and self._loop is not None
        for _ in range(64):
            try:
                data, addr = self._sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            entry = self._sessions.get(addr)
            if entry is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                _buffers(up)
                up.connect(self.upstream)
                up.setblocking(False)
                entry = (len(self._sessions), up)
                self._sessions[addr] = entry
                self._loop.add_reader(up.fileno(), self._on_upstream_readable, addr, entry)
            self._record(True, entry[0], data)
            with contextlib.suppress(OSError):
                entry[1].send(data)

    def _on_upstream_readable(
        self, addr: tuple[str, int], entry: tuple[int, socket.socket]
    ) -> None:
        assert self._sock is not None
        for _ in range(64):
            try:
                data = entry[1].recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED once the server is gone
                return
            self._record(False, entry[0], data)
            with contextlib.suppress(OSError):
                self._sock.sendto(data, addr)


def _buffers(sock: socket.socket, size: int = 4 * 1024 * 1024) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Hello:
    """A TLS ClientHello or ServerHello as seen in Initial CRYPTO data."""

    random: bytes = b""
    cipher_suites: list[int] = dataclasses.field(default_factory=list)
    extensions: list[int] = dataclasses.field(default_factory=list)
    alpn: list[str] = dataclasses.field(default_factory=list)
    max_udp_payload: int | None = None
    """max_udp_payload_size from the QUIC transport parameters extension (bytes)."""


@dataclasses.dataclass
class Connection:
    """What the wire showed of one QUIC connection (one client address, one client SCID)."""

    index: int
    session: int
    client_scid: bytes
    start: float
    server_cids: list[bytes] = dataclasses.field(default_factory=list)
    client_dcids: list[bytes] = dataclasses.field(default_factory=list)
    """CIDs the Initial keys derive from: the client's first DCID, then each Retry's SCID."""
    versions_c2s: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    versions_s2c: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    packets_c2s: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    packets_s2c: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    retry_tokens: list[bytes] = dataclasses.field(default_factory=list)
    initial_tokens: list[bytes] = dataclasses.field(default_factory=list)
    vn_versions: list[int] = dataclasses.field(default_factory=list)
    client_hello: Hello | None = None
    server_hello: Hello | None = None
    first_reply_rtt: float | None = None
    """Seconds from the client's first datagram to the server's first one, at the tap."""
    max_datagram_c2s: int = 0
    max_datagram_s2c: int = 0
    """Largest UDP payload seen per direction (bytes)."""
    client_max_udp_payload: int | None = None
    """The client's max_udp_payload_size transport parameter (ClientHello), bytes."""
    server_max_udp_payload: int | None = None
    """The server's max_udp_payload_size transport parameter (EncryptedExtensions), bytes."""
    keys_found: bool = False
    """The key log held this connection's handshake secrets."""
    alpn: str | None = None
    """ALPN in EncryptedExtensions (needs keys)."""
    early_data_accepted: bool | None = None
    """EncryptedExtensions carried early_data (needs keys)."""
    certificate_sent: bool | None = None
    """The server's Handshake flight held a Certificate message (needs keys)."""
    zero_rtt_frames: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Frame types in the client's 0-RTT packets (needs keys)."""
    key_phases_c2s: list[int] = dataclasses.field(default_factory=list)
    key_phases_s2c: list[int] = dataclasses.field(default_factory=list)
    """Key phase bits of the 1-RTT packets, in order, runs collapsed (needs keys)."""
    notes: list[str] = dataclasses.field(default_factory=list)
    _crypto: dict[tuple[str, bytes], dict[int, bytes]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    _raw: list[tuple[bool, bytes, int]] = dataclasses.field(default_factory=list, repr=False)
    _note_counts: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter, repr=False
    )
    _initial_pn: dict[bool, int] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def resumed(self) -> bool:
        """ServerHello carried pre_shared_key: the server accepted a resumption PSK."""
        return self.server_hello is not None and TLS_EXT_PSK in self.server_hello.extensions

    @property
    def negotiated_version(self) -> int | None:
        """The version of the server's last long header packet (Handshake, after any VN)."""
        return self._last_server_version

    _last_server_version: int | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest."""
        return {
            "index": self.index,
            "session": self.session,
            "versions_c2s": {f"0x{k:08x}": v for k, v in self.versions_c2s.items()},
            "versions_s2c": {f"0x{k:08x}": v for k, v in self.versions_s2c.items()},
            "packets_c2s": dict(self.packets_c2s),
            "packets_s2c": dict(self.packets_s2c),
            "retry": len(self.retry_tokens),
            "initial_tokens": [len(t) for t in self.initial_tokens],
            "client_hello": dataclasses.asdict(self.client_hello) if self.client_hello else None,
            "server_hello": dataclasses.asdict(self.server_hello) if self.server_hello else None,
            "resumed": self.resumed,
            "first_reply_rtt_ms": None
            if self.first_reply_rtt is None
            else round(self.first_reply_rtt * 1000, 1),
            "keys_found": self.keys_found,
            "alpn": self.alpn,
            "early_data_accepted": self.early_data_accepted,
            "certificate_sent": self.certificate_sent,
            "zero_rtt_frames": dict(self.zero_rtt_frames),
            "key_phase_runs_c2s": self.key_phases_c2s,
            "key_phase_runs_s2c": self.key_phases_s2c,
            "max_datagram_c2s": self.max_datagram_c2s,
            "max_datagram_s2c": self.max_datagram_s2c,
            "client_max_udp_payload": self.client_max_udp_payload,
            "server_max_udp_payload": self.server_max_udp_payload,
            "notes": self.notes,
        }


@dataclasses.dataclass
class WireReport:
    """All connections the tap saw, with datagram totals."""

    connections: list[Connection]
    datagrams_c2s: int
    datagrams_s2c: int
    bytes_c2s: int
    bytes_s2c: int

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest (hex/bytes dropped)."""

        def clean(value: Any) -> Any:
            if isinstance(value, bytes):
                return value.hex()
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return {
            "datagrams_c2s": self.datagrams_c2s,
            "datagrams_s2c": self.datagrams_s2c,
            "bytes_c2s": self.bytes_c2s,
            "bytes_s2c": self.bytes_s2c,
            "connections": [clean(c.summary()) for c in self.connections],
        }


def read_keylog(paths: Iterable[Path]) -> dict[bytes, dict[str, bytes]]:
    """NSS key log lines from ``paths``: client_random -> {label: secret}."""
    secrets: dict[bytes, dict[str, bytes]] = collections.defaultdict(dict)
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0].startswith("#"):
                continue
            with contextlib.suppress(ValueError):
                secrets[bytes.fromhex(parts[1])][parts[0]] = bytes.fromhex(parts[2])
    return dict(secrets)


_TYPE_NAMES = {
    QuicPacketType.INITIAL: "initial",
    QuicPacketType.ZERO_RTT: "0rtt",
    QuicPacketType.HANDSHAKE: "handshake",
    QuicPacketType.RETRY: "retry",
    QuicPacketType.VERSION_NEGOTIATION: "version_negotiation",
    QuicPacketType.ONE_RTT: "1rtt",
}


def analyze(records: list[Datagram], keylogs: Iterable[Path] = ()) -> WireReport:
    """Split ``records`` into connections and read what each one's packets show."""
    conns: list[Connection] = []
    by_session: dict[int, list[Connection]] = collections.defaultdict(list)
    first_c2s: dict[int, float] = {}
    totals = [0, 0, 0, 0]
    for rec in records:
        if rec.c2s:
            totals[0] += 1
            totals[2] += rec.size
            first_c2s.setdefault(rec.session, rec.t)
        else:
            totals[1] += 1
            totals[3] += rec.size
        _parse_datagram(rec, conns, by_session)
    secrets = read_keylog(keylogs)
    for conn in conns:
        _finish(conn, secrets)
    return WireReport(conns, *totals)


def _conn_for(
    rec: Datagram,
    scid: bytes | None,
    conns: list[Connection],
    by_session: dict[int, list[Connection]],
) -> Connection | None:
    """The connection a packet belongs to (client Initial with a new SCID opens one)."""
    session = by_session[rec.session]
    if scid is not None:
        for conn in reversed(session):
            if conn.client_scid == scid:
                return conn
        conn = Connection(len(conns), rec.session, scid, rec.t)
        conns.append(conn)
        session.append(conn)
        return conn
    return session[-1] if session else None


def _parse_datagram(
    rec: Datagram, conns: list[Connection], by_session: dict[int, list[Connection]]
) -> None:
    data = rec.data
    start = 0
    while start < len(data):
        first = data[start]
        if not first & 0x80:
            conn = _conn_for(rec, None, conns, by_session)
            if conn is not None:
                _count_size(conn, rec)
                (conn.packets_c2s if rec.c2s else conn.packets_s2c)["1rtt"] += 1
                conn._raw.append((rec.c2s, data[start:], -1))
            return
        # aioquic's parser rejects a zero fixed bit, which peers may grease (RFC 9287): parse
        # a copy with the bit set, decrypt the original (the header is the AEAD's AAD).
        patched = bytearray(data[start:])
        patched[0] |= 0x40
        buf = Buffer(data=bytes(patched))
        try:
            header = pull_quic_header(buf, host_cid_length=8)
        except (ValueError, BufferReadError):
            return
        pn_offset = buf.tell()
        packet = data[start : start + header.packet_length]
        start += max(1, header.packet_length)
        name = _TYPE_NAMES.get(header.packet_type, "other")
        if rec.c2s:
            conn = _conn_for(
                rec,
                header.source_cid if header.packet_type == QuicPacketType.INITIAL else None,
                conns,
                by_session,
            )
        else:
            conn = _conn_for(rec, None, conns, by_session)
        if conn is None:
            continue
        _count_size(conn, rec)
        if rec.c2s:
            conn.packets_c2s[name] += 1
            if header.version:
                conn.versions_c2s[header.version] += 1
            if header.packet_type == QuicPacketType.INITIAL:
                if not conn.client_dcids:
                    conn.client_dcids.append(header.destination_cid)
                if header.token and header.token not in conn.initial_tokens:
                    conn.initial_tokens.append(header.token)
        else:
            if conn.first_reply_rtt is None:
                conn.first_reply_rtt = rec.t - conn.start
            conn.packets_s2c[name] += 1
            if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
                conn.vn_versions = list(header.supported_versions)
                continue
            if header.version:
                conn.versions_s2c[header.version] += 1
                conn._last_server_version = header.version
            if header.packet_type == QuicPacketType.RETRY:
                conn.retry_tokens.append(header.token)
                if header.source_cid not in conn.client_dcids:
                    conn.client_dcids.append(header.source_cid)
                continue
            if header.source_cid and header.source_cid not in conn.server_cids:
                conn.server_cids.append(header.source_cid)
        if header.packet_type == QuicPacketType.INITIAL:
            _read_initial(conn, rec.c2s, header.version or VERSION_1, packet, pn_offset)
        elif header.packet_type in (QuicPacketType.HANDSHAKE, QuicPacketType.ZERO_RTT):
            conn._raw.append((rec.c2s, packet, pn_offset))


def _count_size(conn: Connection, rec: Datagram) -> None:
    if rec.c2s:
        conn.max_datagram_c2s = max(conn.max_datagram_c2s, rec.size)
    else:
        conn.max_datagram_s2c = max(conn.max_datagram_s2c, rec.size)


def transport_parameters(data: bytes) -> dict[int, bytes]:
    """QUIC transport parameters (TLS extension 57): id -> raw value."""
    out: dict[int, bytes] = {}
    buf = Buffer(data=data)
    with contextlib.suppress(BufferReadError):
        while not buf.eof():
            pid = buf.pull_uint_var()
            out[pid] = buf.pull_bytes(buf.pull_uint_var())
    return out


def _max_udp_payload(data: bytes) -> int:
    """max_udp_payload_size (id 0x03) from extension 57's data; 65527 when absent."""
    value = transport_parameters(data).get(0x03)
    if value is None:
        return 65527
    try:
        return int(Buffer(data=value).pull_uint_var())
    except BufferReadError:
        return 65527


def _note(conn: Connection, text: str) -> None:
    """Add a note once (with a count kept in the text for repeats)."""
    conn._note_counts[text] += 1
    if conn._note_counts[text] == 1:
        conn.notes.append(text)


def _read_initial(conn: Connection, c2s: bool, version: int, packet: bytes, pn_offset: int) -> None:
    """Decrypt an Initial packet with the public keys and keep its CRYPTO data."""
    candidates = list(reversed(conn.client_dcids))
    for dcid in candidates:
        pair = CryptoPair()
        pair.setup_initial(dcid, is_client=not c2s, version=version)
        try:
            _, payload, pn = pair.decrypt_packet(packet, pn_offset, conn._initial_pn.get(c2s, 0))
        except CryptoError:
            continue
        conn._initial_pn[c2s] = max(pn + 1, conn._initial_pn.get(c2s, 0))
        _collect_crypto(conn, ("initial-c2s" if c2s else "initial-s2c", dcid), payload)
        return
    _note(conn, f"an Initial ({'c2s' if c2s else 's2c'}) did not decrypt")


_STREAM_TYPES = range(0x08, 0x10)


def _frames(payload: bytes) -> list[tuple[str, Any]]:
    """Frames of a decrypted payload: (name, CRYPTO (offset, data) or None). Stops at the
    first STREAM frame's end or an unknown frame type."""
    out: list[tuple[str, Any]] = []
    buf = Buffer(data=payload)
    try:
        while not buf.eof():
            ftype = buf.pull_uint_var()
            if ftype == 0x00:
                continue
            if ftype == 0x01:
                out.append(("ping", None))
            elif ftype in (0x02, 0x03):
                buf.pull_uint_var()
                buf.pull_uint_var()
                count = buf.pull_uint_var()
                buf.pull_uint_var()
                for _ in range(count):
                    buf.pull_uint_var()
                    buf.pull_uint_var()
                if ftype == 0x03:
                    for _ in range(3):
                        buf.pull_uint_var()
                out.append(("ack", None))
            elif ftype == 0x04:
                for _ in range(3):
                    buf.pull_uint_var()
                out.append(("reset_stream", None))
            elif ftype == 0x05:
                buf.pull_uint_var()
                buf.pull_uint_var()
                out.append(("stop_sending", None))
            elif ftype == 0x06:
                offset = buf.pull_uint_var()
                length = buf.pull_uint_var()
                out.append(("crypto", (offset, buf.pull_bytes(length))))
            elif ftype == 0x07:
                buf.pull_bytes(buf.pull_uint_var())
                out.append(("new_token", None))
            elif ftype in _STREAM_TYPES:
                out.append(("stream", None))
                buf.pull_uint_var()
                if ftype & 0x04:
                    buf.pull_uint_var()
                if ftype & 0x02:
                    buf.pull_bytes(buf.pull_uint_var())
                else:
                    break
            elif ftype in (0x10, 0x12, 0x13, 0x14, 0x16, 0x17, 0x19):
                buf.pull_uint_var()
                out.append((f"frame_0x{ftype:02x}", None))
            elif ftype in (0x11, 0x15):
                buf.pull_uint_var()
                buf.pull_uint_var()
                out.append((f"frame_0x{ftype:02x}", None))
            elif ftype == 0x18:
                buf.pull_uint_var()
                buf.pull_uint_var()
                buf.pull_bytes(buf.pull_uint8())
                buf.pull_bytes(16)
                out.append(("new_connection_id", None))
            elif ftype in (0x1A, 0x1B):
                buf.pull_bytes(8)
                out.append(("path", None))
            elif ftype in (0x1C, 0x1D):
                buf.pull_uint_var()
                if ftype == 0x1C:
                    buf.pull_uint_var()
                buf.pull_bytes(buf.pull_uint_var())
                out.append(("connection_close", None))
            elif ftype == 0x1E:
                out.append(("handshake_done", None))
            else:
                out.append((f"frame_0x{ftype:x}", None))
                break
    except BufferReadError:
        out.append(("truncated", None))
    return out


def _collect_crypto(conn: Connection, key: tuple[str, bytes], payload: bytes) -> None:
    chunks = conn._crypto.setdefault(key, {})
    for name, value in _frames(payload):
        if name == "crypto":
            offset, data = value
            if offset not in chunks or len(chunks[offset]) < len(data):
                chunks[offset] = data


def _stream(chunks: dict[int, bytes]) -> bytes:
    """The contiguous bytes from offset 0 of a CRYPTO stream's chunks."""
    out = bytearray()
    for offset in sorted(chunks):
        data = chunks[offset]
        if offset > len(out):
            break
        out += data[len(out) - offset :]
    return bytes(out)


def _handshake_messages(stream: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each complete TLS handshake message in ``stream``."""
    out = []
    pos = 0
    while pos + 4 <= len(stream):
        mtype = stream[pos]
        length = int.from_bytes(stream[pos + 1 : pos + 4], "big")
        if pos + 4 + length > len(stream):
            break
        out.append((mtype, stream[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _extensions(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    buf = Buffer(data=data)
    with contextlib.suppress(BufferReadError):
        total = buf.pull_uint16()
        end = buf.tell() + total
        while buf.tell() < end:
            etype = buf.pull_uint16()
            out.append((etype, buf.pull_bytes(buf.pull_uint16())))
    return out


def _alpn_list(data: bytes) -> list[str]:
    out = []
    buf = Buffer(data=data)
    with contextlib.suppress(BufferReadError):
        end = 2 + buf.pull_uint16()
        while buf.tell() < end:
            out.append(buf.pull_bytes(buf.pull_uint8()).decode("ascii", "replace"))
    return out


def _parse_hello(body: bytes, client: bool) -> Hello:
    hello = Hello()
    buf = Buffer(data=body)
    try:
        buf.pull_uint16()
        hello.random = buf.pull_bytes(32)
        buf.pull_bytes(buf.pull_uint8())
        if client:
            suites = buf.pull_bytes(buf.pull_uint16())
            hello.cipher_suites = [
                int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)
            ]
            buf.pull_bytes(buf.pull_uint8())
        else:
            hello.cipher_suites = [buf.pull_uint16()]
            buf.pull_uint8()
        rest = body[buf.tell() :]
    except BufferReadError:
        return hello
    for etype, edata in _extensions(rest):
        hello.extensions.append(etype)
        if etype == TLS_EXT_ALPN:
            hello.alpn = _alpn_list(edata)
        elif etype == TLS_EXT_QUIC_TP:
            hello.max_udp_payload = _max_udp_payload(edata)
    return hello


def _finish(conn: Connection, secrets: dict[bytes, dict[str, bytes]]) -> None:
    """Parse the hellos, then use the key log for Handshake, 0-RTT and 1-RTT packets."""
    for (kind, _), chunks in conn._crypto.items():
        for mtype, body in _handshake_messages(_stream(chunks)):
            # after a Retry the client may send a new ClientHello: the last one counts
            if kind == "initial-c2s" and mtype == 1:
                conn.client_hello = _parse_hello(body, client=True)
                conn.client_max_udp_payload = conn.client_hello.max_udp_payload
            elif kind == "initial-s2c" and mtype == 2:
                conn.server_hello = _parse_hello(body, client=False)
    conn._crypto.clear()
    if conn.client_hello is None or conn.server_hello is None:
        conn._raw.clear()
        return
    keys = secrets.get(conn.client_hello.random)
    if not keys:
        conn._raw.clear()
        return
    conn.keys_found = True
    suite = CipherSuite(conn.server_hello.cipher_suites[0])

    def context(label: str, version: int, cipher: CipherSuite = suite) -> CryptoContext | None:
        secret = keys.get(label)
        if secret is None:
            return None
        ctx = CryptoContext()
        ctx.setup(cipher_suite=cipher, secret=secret, version=version)
        return ctx

    contexts: dict[tuple[str, int], CryptoContext | None] = {}
    hs_chunks: dict[int, bytes] = {}
    phases: dict[bool, list[int]] = {True: [], False: []}
    one_rtt: dict[bool, CryptoContext | None] = {}
    version = conn._last_server_version or VERSION_1
    pns: dict[tuple[str, bool], int] = collections.defaultdict(int)
    for c2s, packet, pn_offset in conn._raw:
        first = packet[0]
        if pn_offset >= 0:  # long header: Handshake or 0-RTT
            pversion = int.from_bytes(packet[1:5], "big")
            is_0rtt = ((first & 0x30) >> 4) == (2 if pversion == VERSION_2 else 1)
            if is_0rtt:
                label = "CLIENT_EARLY_TRAFFIC_SECRET"
            else:
                label = (
                    "CLIENT_HANDSHAKE_TRAFFIC_SECRET" if c2s else "SERVER_HANDSHAKE_TRAFFIC_SECRET"
                )
            key = (label, pversion)
            if key not in contexts:
                contexts[key] = context(label, pversion)
            ctx = contexts[key]
            if ctx is None:
                continue
            space = ("0rtt" if is_0rtt else "hs", c2s)
            try:
                _, payload, pn, _ = ctx.decrypt_packet(packet, pn_offset, pns[space])
            except CryptoError:
                _note(conn, f"a {'0-RTT' if is_0rtt else 'Handshake'} packet did not decrypt")
                continue
            pns[space] = pn + 1
            if is_0rtt:
                for name, _ in _frames(payload):
                    conn.zero_rtt_frames[name] += 1
            elif not c2s:
                for name, value in _frames(payload):
                    if name == "crypto":
                        offset, data = value
                        if offset not in hs_chunks or len(hs_chunks[offset]) < len(data):
                            hs_chunks[offset] = data
        else:  # short header: the key phase bit, after removing header protection
            if c2s not in one_rtt:
                one_rtt[c2s] = context(
                    "CLIENT_TRAFFIC_SECRET_0" if c2s else "SERVER_TRAFFIC_SECRET_0", version
                )
            ctx = one_rtt[c2s]
            cids = conn.server_cids if c2s else [conn.client_scid]
            if ctx is None or not cids or ctx.hp is None:
                continue
            offset = 1 + len(cids[-1])
            try:
                plain_header, _ = ctx.hp.remove(packet, offset)
            except Exception:
                continue
            if plain_header[0] & 0x18:
                # Reserved bits set once unmasked (RFC 9000, 17.3.1): not a packet of this
                # connection's 1-RTT keys (e.g. a stateless reset); its phase bit is noise.
                continue
            phase = (plain_header[0] >> 2) & 1
            runs = phases[c2s]
            if not runs and phase:
                continue  # 1-RTT starts in key phase 0 (RFC 9001, 6): a 1 first is noise
            if not runs or runs[-1] != phase:
                runs.append(phase)
    conn._raw.clear()
    conn.key_phases_c2s = phases[True]
    conn.key_phases_s2c = phases[False]
    messages = _handshake_messages(_stream(hs_chunks))
    if messages:
        conn.certificate_sent = any(mtype == 11 for mtype, _ in messages)
        for mtype, body in messages:
            if mtype == 8:  # EncryptedExtensions
                exts = dict(_extensions(body))
                conn.early_data_accepted = TLS_EXT_EARLY_DATA in exts
                if TLS_EXT_QUIC_TP in exts:
                    conn.server_max_udp_payload = _max_udp_payload(exts[TLS_EXT_QUIC_TP])
                if TLS_EXT_ALPN in exts:
                    names = _alpn_list(exts[TLS_EXT_ALPN])
                    conn.alpn = names[0] if names else None
