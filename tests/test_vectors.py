"""The spec's test vectors (spec/vectors/*.json), both directions, against the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic import events as qe

from quicstore.proto.codes import ErrorCode
from quicstore.proto.connection import QuicstoreConnection
from quicstore.proto.errors import RemoteProtocolError
from quicstore.proto.fields import (
    event_to_fields,
    frame_from_fields,
    frame_to_fields,
    message_from_fields,
)
from quicstore.proto.framer import FrameReader
from quicstore.proto.frames import DataFrame, Frame, MalformedFrame, SettingsFrame, encode_frame
from quicstore.proto.messages import Listing, RequestHeader, ResponseHeader, Trailer
from quicstore.proto.settings import Settings

from .fakes import FakeQuic

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"
FRAMES = json.loads((VECTORS / "frames.json").read_text())
EXCHANGES = json.loads((VECTORS / "exchanges.json").read_text())["exchanges"]


def decode_all(wire: bytes, max_frame_size: int = 65536) -> list[Frame]:
    frames = FrameReader(max_frame_size).feed(wire, end_stream=True)
    joined: list[Frame] = []
    for f in frames:
        if isinstance(f, DataFrame) and joined and isinstance(joined[-1], DataFrame):
            joined[-1] = DataFrame(bytes(joined[-1].data) + bytes(f.data))
        else:
            joined.append(DataFrame(bytes(f.data)) if isinstance(f, DataFrame) else f)
    return joined


@pytest.mark.parametrize("vector", FRAMES["valid"], ids=lambda v: v["name"])
def test_valid_frame_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    (frame,) = decode_all(bytes.fromhex(vector["hex"]))
    assert frame_to_fields(frame) == vector["frame"]


@pytest.mark.parametrize(
    "vector", [v for v in FRAMES["valid"] if not v.get("decode_only")], ids=lambda v: v["name"]
)
def test_valid_frame_fields_encode_to_its_bytes(vector: dict[str, Any]) -> None:
    assert encode_frame(frame_from_fields(vector["frame"])).hex() == vector["hex"]


def error_for(wire: bytes, max_frame_size: int) -> str | None:
    try:
        frames = FrameReader(max_frame_size).feed(wire, end_stream=True)
    except RemoteProtocolError as exc:
        return ErrorCode(exc.code).name
    for frame in frames:
        if isinstance(frame, MalformedFrame):
            return ErrorCode(frame.code).name
        if isinstance(frame, SettingsFrame):
            try:
                Settings.from_frame(frame)
            except RemoteProtocolError as exc:
                return ErrorCode(exc.code).name
    return None


@pytest.mark.parametrize("vector", FRAMES["invalid"], ids=lambda v: v["name"])
def test_invalid_bytes_produce_their_error(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])
    assert error_for(wire, vector.get("max_frame_size", 65536)) == vector["error"]
    # The same outcome when the bytes arrive one at a time.
    reader = FrameReader(vector.get("max_frame_size", 65536))
    code = None
    try:
        for i in range(len(wire)):
            for frame in reader.feed(wire[i : i + 1], end_stream=i == len(wire) - 1):
                if isinstance(frame, MalformedFrame):
                    code = ErrorCode(frame.code).name
                elif isinstance(frame, SettingsFrame):
                    try:
                        Settings.from_frame(frame)
                    except RemoteProtocolError as exc:
                        code = ErrorCode(exc.code).name
    except RemoteProtocolError as exc:
        code = ErrorCode(exc.code).name
    assert code == vector["error"]


def run_command(conn: QuicstoreConnection, command: dict[str, Any]) -> Any:
    args = {k: v for k, v in command.items() if k != "name"}
    name = command["name"]
    if "header" in args:
        kind = RequestHeader if name == "send_request" else ResponseHeader
        args["header"] = message_from_fields(kind, args["header"])
    if "trailer" in args:
        args["trailer"] = message_from_fields(Trailer, args["trailer"])
    if "listing" in args:
        args["listing"] = message_from_fields(Listing, args["listing"])
    if "data" in args:
        args["data"] = bytes.fromhex(args["data"])
    if "checksums" in args:
        args["checksums"] = [int(c, 16) for c in args["checksums"]]
    if "code" in args:
        args["code"] = ErrorCode[args["code"]]
    stream_id = args.pop("stream_id", None)
    method = getattr(conn, name)
    return method(stream_id, **args) if stream_id is not None else method(**args)


def observed(quic: FakeQuic, events: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if events:
        out["events"] = [event_to_fields(e) for e in events]
        for e in out["events"]:
            if e["event"] == "StreamAbandoned":
                del e["reason"]  # a local diagnostic, not part of the protocol
    sent = quic.take()
    if sent:
        out["sent"] = [
            {"stream": s.stream_id, "hex": s.data.hex(), "fin": s.end_stream} for s in sent
        ]
    if quic.stops:
        out["stops"] = [[s, ErrorCode(c).name] for s, c in quic.stops]
        quic.stops = []
    if quic.resets:
        out["resets"] = [[s, ErrorCode(c).name] for s, c in quic.resets]
        quic.resets = []
    if quic.closed:
        out["close"] = ErrorCode(quic.closed[0]).name
        quic.closed = None
    return out


@pytest.mark.parametrize("exchange", EXCHANGES, ids=lambda e: e["name"])
def test_scripted_exchange(exchange: dict[str, Any]) -> None:
    is_client = exchange["role"] == "client"
    quic = FakeQuic(is_client=is_client)
    conn = QuicstoreConnection(quic, is_client=is_client, grease=False)
    for number, step in enumerate(exchange["steps"]):
        events: list[Any] = []
        if "receive" in step:
            r = step["receive"]
            events = conn.handle_event(
                qe.StreamDataReceived(
                    data=bytes.fromhex(r["hex"]), end_stream=r["fin"], stream_id=r["stream"]
                )
            )
        elif "receive_reset" in step:
            r = step["receive_reset"]
            events = conn.handle_event(
                qe.StreamReset(error_code=ErrorCode[r["code"]], stream_id=r["stream"])
            )
        elif "command" in step:
            returned = run_command(conn, step["command"])
            if "returns" in step:
                assert returned == step["returns"], f"step {number}"
        assert observed(quic, events) == step["expect"], f"step {number}: {step.get('note', '')}"
