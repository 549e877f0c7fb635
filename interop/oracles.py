"""Oracle checks: what the wire, the qlog files and the logs must show for each test case.

The interop runner checks a pcap; here the same facts come from, in order of preference:

1. the wire tap (``interop.wire``), decrypted with the endpoints' SSLKEYLOGFILE secrets: versions,
   Retry, ClientHello/ServerHello, EncryptedExtensions (ALPN, early_data), Certificate, 0-RTT
   frames, key phase bits;
2. qlog from either side (aioquic/qh3/hypercorn JSON, ngtcp2 JSON-SEQ, quicstore): e.g.
   ``security:key_updated`` with trigger ``local_update``/``remote_update``, ``packet_received``
   of type ``retry`` or ``0RTT``;
3. log lines (aioquic's ``ALPN negotiated protocol h3``) and the impairment proxy's counters.

Each check returns a ``CheckResult`` whose ``detail`` names the evidence it used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from interop.testcases import TestCase
from interop.wire import VERSION_1, VERSION_2, Connection, WireReport

CHACHA20 = 0x1303


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome and the evidence behind it."""

    name: str
    ok: bool
    detail: str


@dataclasses.dataclass
class QlogEvent:
    """A qlog event, normalised across qlog dialects: ``category:event`` name and data."""

    name: str
    data: dict[str, Any]
    vantage: str
    """``server`` or ``client`` (the side whose qlog it came from)."""


def read_qlogs(folder: Path | None, vantage: str) -> list[list[QlogEvent]]:
    """Every trace in ``folder`` (``*.qlog``, ``*.sqlog``, ``*.json``): one event list each.
    Understands qlog 0.3 JSON (``traces``), JSON-SEQ (RS-separated or one record per line)
    and the draft's ``event_fields`` list form."""
    traces: list[list[QlogEvent]] = []
    if folder is None or not folder.is_dir():
        return traces
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".qlog", ".sqlog", ".json"):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        traces.extend(_parse_qlog(text, vantage))
    return traces


def _parse_qlog(text: str, vantage: str) -> list[list[QlogEvent]]:
    stripped = text.lstrip("\x1e \n")
    try:
        doc = json.loads(stripped)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "traces" in doc:
        out = []
        for trace in doc["traces"]:
            fields = trace.get("event_fields")
            events = []
            for ev in trace.get("events", []):
                events.append(_event(ev, fields, vantage))
            out.append([e for e in events if e is not None])
        return out
    events: list[QlogEvent] = []
    for chunk in re.split(r"[\x1e\n]+", text):
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            record = json.loads(chunk)
        except ValueError:
            continue
        if isinstance(record, dict):
            ev = _event(record, None, vantage)
            if ev is not None:
                events.append(ev)
    return [events] if events else []


def _event(ev: Any, fields: list[str] | None, vantage: str) -> QlogEvent | None:
    if isinstance(ev, list) and fields:
        ev = dict(zip(fields, ev, strict=False))
    if not isinstance(ev, dict):
        return None
    name = ev.get("name")
    if name is None and "category" in ev and "event" in ev:
        name = f"{ev['category']}:{ev['event']}"
    if not isinstance(name, str):
        return None
    data = ev.get("data")
    return QlogEvent(name.replace(".", ":"), data if isinstance(data, dict) else {}, vantage)


@dataclasses.dataclass
class Evidence:
    """Everything a cell produced that the checks may read."""

    testcase: TestCase
    alpn: str
    """The ALPN the driver asked for."""
    wire: WireReport
    qlogs: list[list[QlogEvent]]
    """Traces from both sides (``QlogEvent.vantage`` tells which)."""
    logs: dict[str, str]
    """``server``/``client`` -> their stderr/stdout text."""
    dropped: tuple[int, int] | None = None
    """The impairment proxy's drops (client->server, server->client), datagrams."""
    expected_connections: int = 1

    def events(self, name_suffix: str) -> Iterator[QlogEvent]:
        """Every qlog event whose name ends with ``name_suffix`` (e.g. ``key_updated``)."""
        for trace in self.qlogs:
            for ev in trace:
                if ev.name.endswith(name_suffix):
                    yield ev

    @property
    def handshakes(self) -> list[Connection]:
        """Connections whose ServerHello the tap saw (handshake reached the client)."""
        return [c for c in self.wire.connections if c.server_hello is not None]


Check = Callable[[Evidence], CheckResult]


def _packet_type(ev: QlogEvent) -> str:
    header = ev.data.get("header") or {}
    return str(header.get("packet_type", "")).lower().replace("-", "")


def check_connections(count: int, name: str) -> Check:
    """Exactly ``count`` (or, for ``each``, as many as files) handshakes on the wire."""

    def check(ev: Evidence) -> CheckResult:
        want = len(ev.testcase.sizes) if count < 0 else count
        got = ev.handshakes
        started = len(ev.wire.connections)
        ok = len(got) == want and started == want
        return CheckResult(
            name,
            ok,
            f"wire: {started} connection(s) started, {len(got)} with a ServerHello; "
            f"expected {want}",
        )

    return check


def check_no_retry(ev: Evidence) -> CheckResult:
    """No Retry packet."""
    n = sum(len(c.retry_tokens) for c in ev.wire.connections)
    return CheckResult("no_retry", n == 0, f"wire: {n} Retry packet(s)")


def check_version(version: int) -> Check:
    """Every long header packet (after any Version Negotiation) used ``version``."""
    name = "version_1" if version == VERSION_1 else "version_2"

    def check(ev: Evidence) -> CheckResult:
        conns = ev.handshakes
        if not conns:
            return CheckResult(name, False, "wire: no handshake seen")
        details = []
        ok = True
        for c in conns:
            server = set(c.versions_s2c)
            client = set(c.versions_c2s)
            details.append(
                f"conn {c.index}: client "
                + ",".join(f"0x{v:08x}" for v in sorted(client))
                + " server "
                + ",".join(f"0x{v:08x}" for v in sorted(server))
            )
            if version == VERSION_1:
                ok &= server == {VERSION_1} and client == {VERSION_1}
            else:
                # compatible negotiation: the client may start in v1; the server answers in v2
                ok &= server == {VERSION_2} and client <= {VERSION_1, VERSION_2}
                ok &= c.negotiated_version == VERSION_2
        return CheckResult(name, ok, "wire: " + "; ".join(details))

    return check


def _log_alpn(ev: Evidence) -> str | None:
    for side in ("server", "client"):
        match = re.search(r"ALPN negotiated protocol (\S+)", ev.logs.get(side, ""))
        if match:
            return match.group(1)
    return None


def check_alpn(ev: Evidence) -> CheckResult:
    """The negotiated ALPN is the one asked for."""
    want = ev.alpn
    seen = [c.alpn for c in ev.handshakes if c.keys_found and c.alpn is not None]
    if seen:
        ok = all(a == want for a in seen)
        return CheckResult("alpn", ok, f"wire (EncryptedExtensions): {sorted(set(seen))}")
    for qev in ev.events("alpn_information"):
        chosen = qev.data.get("chosen_alpn")
        if isinstance(chosen, dict):
            chosen = chosen.get("string_value")
        if chosen:
            return CheckResult("alpn", chosen == want, f"qlog ({qev.vantage}): {chosen}")
    logged = _log_alpn(ev)
    if logged:
        return CheckResult("alpn", logged == want, f"log: ALPN negotiated protocol {logged}")
    offered = [c.client_hello.alpn for c in ev.handshakes if c.client_hello]
    if offered and all(o == [want] for o in offered):
        return CheckResult(
            "alpn", True, f"wire: ClientHello offered only {want!r} and the handshake completed"
        )
    return CheckResult("alpn", False, f"no evidence of ALPN {want!r} (offered: {offered})")


def check_retry(ev: Evidence) -> CheckResult:
    """The server sent a Retry and the client's next Initial carried its token."""
    for c in ev.wire.connections:
        if c.retry_tokens:
            echoed = any(t in c.initial_tokens for t in c.retry_tokens)
            return CheckResult(
                "retry",
                echoed and c.server_hello is not None,
                f"wire: {len(c.retry_tokens)} Retry ({len(c.retry_tokens[0])}-byte token), "
                f"token echoed in a client Initial: {echoed}, handshake completed: "
                f"{c.server_hello is not None}",
            )
    for qev in ev.events("packet_received"):
        if _packet_type(qev) == "retry":
            return CheckResult("retry", True, f"qlog ({qev.vantage}): retry packet received")
    return CheckResult("retry", False, "no Retry packet on the wire or in any qlog")


def check_resumption(ev: Evidence) -> CheckResult:
    """The first connection did a full handshake, the second resumed (PSK accepted)."""
    conns = ev.handshakes
    if len(conns) < 2:
        return CheckResult("resumption", False, f"wire: {len(conns)} handshake(s), need 2")
    first, second = conns[0], conns[-1]
    ok = not first.resumed and second.resumed
    detail = f"wire: ServerHello pre_shared_key: first {first.resumed}, second {second.resumed}"
    if second.certificate_sent is not None:
        ok &= not second.certificate_sent
        detail += f"; Certificate sent on the second: {second.certificate_sent}"
    return CheckResult("resumption", ok, detail)


def check_zerortt(ev: Evidence) -> CheckResult:
    """The second connection carried its requests in 0-RTT and the server accepted them."""
    conns = ev.handshakes
    if len(conns) < 2:
        return CheckResult("zerortt", False, f"wire: {len(conns)} handshake(s), need 2")
    first, second = conns[0], conns[-1]
    sent = second.packets_c2s.get("0rtt", 0)
    if first.packets_c2s.get("0rtt", 0):
        return CheckResult("zerortt", False, "wire: 0-RTT on the first connection")
    if not sent:
        return CheckResult("zerortt", False, "wire: no 0-RTT packet from the client")
    if second.keys_found and second.early_data_accepted is not None:
        streams = second.zero_rtt_frames.get("stream", 0)
        ok = bool(second.early_data_accepted) and streams > 0
        return CheckResult(
            "zerortt",
            ok,
            f"wire: {sent} 0-RTT packet(s), {streams} STREAM frame(s) in them, "
            f"EncryptedExtensions early_data: {second.early_data_accepted}",
        )
    received = [
        qev for qev in ev.events("packet_received")
        if qev.vantage == "server" and _packet_type(qev) == "0rtt"
    ]  # fmt: skip
    if received:
        return CheckResult(
            "zerortt", True,
            f"wire: {sent} 0-RTT packet(s); server qlog: {len(received)} 0-RTT packet(s) "
            "decrypted and processed",
        )  # fmt: skip
    return CheckResult(
        "zerortt", False, f"wire: {sent} 0-RTT packet(s) but no evidence the server accepted them"
    )


def check_chacha20(ev: Evidence) -> CheckResult:
    """Only TLS_CHACHA20_POLY1305_SHA256 offered, and chosen."""
    conns = ev.handshakes
    if not conns:
        return CheckResult("chacha20", False, "wire: no handshake seen")
    details = []
    ok = True
    for c in conns:
        assert c.client_hello is not None and c.server_hello is not None
        offered = [s for s in c.client_hello.cipher_suites if s & 0x0F0F != 0x0A0A]  # no GREASE
        chosen = c.server_hello.cipher_suites[0]
        ok &= offered == [CHACHA20] and chosen == CHACHA20
        details.append(f"offered {[f'0x{s:04x}' for s in offered]}, chosen 0x{chosen:04x}")
    return CheckResult("chacha20", ok, "wire: " + "; ".join(details))


def check_keyupdate(ev: Evidence) -> CheckResult:
    """The client updated its 1-RTT keys and the server followed."""
    for c in ev.handshakes:
        if c.keys_found and (c.key_phases_c2s or c.key_phases_s2c):
            ok = len(c.key_phases_c2s) >= 2 and len(c.key_phases_s2c) >= 2
            return CheckResult(
                "keyupdate",
                ok,
                f"wire: key phase runs client->server {c.key_phases_c2s}, "
                f"server->client {c.key_phases_s2c}",
            )
    triggers = {(qev.vantage, str(qev.data.get("trigger"))) for qev in ev.events("key_updated")}
    updates = sorted(t for t in triggers if t[1] in ("local_update", "remote_update"))
    if updates:
        ok = ("client", "local_update") in updates or ("server", "remote_update") in updates
        return CheckResult("keyupdate", ok, f"qlog key_updated: {updates}")
    return CheckResult("keyupdate", False, "no key phase change on the wire, none in qlog")


def check_long_rtt(ev: Evidence) -> CheckResult:
    """The path really had the long RTT (2 x the proxy's one-way delay)."""
    imp = ev.testcase.impairment
    want = 2 * (imp.delay_ms if imp else 0.0) / 1000.0
    rtts = [c.first_reply_rtt for c in ev.wire.connections if c.first_reply_rtt is not None]
    if not rtts:
        return CheckResult("long_rtt", False, "wire: no server reply timed")
    ok = min(rtts) >= 0.9 * want
    return CheckResult(
        "long_rtt",
        ok,
        f"wire: first reply after {min(rtts) * 1000:.0f} ms (path RTT {want * 1000:.0f} ms)",
    )


def check_loss_applied(ev: Evidence) -> CheckResult:
    """The impairment proxy did drop datagrams (the test exercised loss recovery)."""
    if ev.dropped is None:
        return CheckResult("loss_applied", False, "no impairment proxy on the path")
    up, down = ev.dropped
    wire = ev.wire
    biggest = max((c.max_datagram_s2c for c in wire.connections), default=0)
    return CheckResult(
        "loss_applied",
        up + down > 0,
        f"proxy dropped {up} client->server, {down} server->client datagrams (of "
        f"{wire.datagrams_c2s} and {wire.datagrams_s2c} at the tap; largest server datagram "
        f"{biggest} B)",
    )


def check_udp_payload_size(ev: Evidence) -> CheckResult:
    """No datagram exceeded the receiver's max_udp_payload_size transport parameter
    (RFC 9000 18.2; the client's from its ClientHello, the server's from EncryptedExtensions,
    which needs the key log)."""
    details = []
    ok = True
    for c in ev.wire.connections:
        if c.client_max_udp_payload is not None:
            over = c.max_datagram_s2c > c.client_max_udp_payload
            ok &= not over
            details.append(
                f"conn {c.index}: server->client max {c.max_datagram_s2c} B "
                f"(client allows {c.client_max_udp_payload})"
            )
        if c.server_max_udp_payload is not None:
            over = c.max_datagram_c2s > c.server_max_udp_payload
            ok &= not over
            details.append(
                f"client->server max {c.max_datagram_c2s} B "
                f"(server allows {c.server_max_udp_payload})"
            )
    if not details:
        return CheckResult("udp_payload_size", True, "wire: no transport parameters seen")
    return CheckResult("udp_payload_size", ok, "wire: " + "; ".join(details))


CHECKS: dict[str, Check] = {
    "one_connection": check_connections(1, "one_connection"),
    "two_connections": check_connections(2, "two_connections"),
    "each_connection": check_connections(-1, "each_connection"),
    "no_retry": check_no_retry,
    "version_1": check_version(VERSION_1),
    "version_2": check_version(VERSION_2),
    "alpn": check_alpn,
    "retry": check_retry,
    "resumption": check_resumption,
    "zerortt": check_zerortt,
    "chacha20": check_chacha20,
    "keyupdate": check_keyupdate,
    "long_rtt": check_long_rtt,
    "loss_applied": check_loss_applied,
    "udp_payload_size": check_udp_payload_size,
}
"""Every oracle check by name (``TestCase.checks`` refers to these)."""


ALWAYS = ("udp_payload_size",)
"""Checks that apply to every test case."""


def run_checks(ev: Evidence) -> list[CheckResult]:
    """The test case's checks, then those in ``ALWAYS``."""
    return [CHECKS[name](ev) for name in (*ev.testcase.checks, *ALWAYS)]
