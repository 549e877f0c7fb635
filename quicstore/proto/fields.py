"""A JSON view of frames and events: for the spec's test vectors, logs and debugging.

Bytes become lowercase hex strings; structured payloads become JSON objects with the
spec's field names. :func:`frame_from_fields` inverts :func:`frame_to_fields`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from . import events as ev
from .codes import ErrorCode, FrameType, SettingId
from .frames import (
    ChecksumsFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    GoawayFrame,
    ListingFrame,
    RequestFrame,
    ResponseFrame,
    SettingsFrame,
    TrailerFrame,
    UnknownFrame,
)
from .messages import Listing, RequestHeader, ResponseHeader, Trailer

_BYTES_FIELDS = frozenset({"sha256"})
"""Fields of structured payloads whose values are bytes (shown as hex)."""


def _hexify(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _hexify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hexify(v) for v in value]
    return value


def _to_json(value: Any) -> Any:
    return _hexify(msgspec.to_builtins(value, builtin_types=(bytes, bytearray, memoryview)))


def _unhexify(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: bytes.fromhex(v) if k in _BYTES_FIELDS and isinstance(v, str) else _unhexify(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_unhexify(v) for v in value]
    return value


def message_from_fields(kind: type[Any], value: Any) -> Any:
    """A structured payload (msgspec Struct of type ``kind``) from its JSON view."""
    return msgspec.convert(_unhexify(value), kind, builtin_types=(bytes,))


def _struct_fields(message: msgspec.Struct) -> dict[str, Any]:
    out = _to_json(message)
    assert isinstance(out, dict)
    for name in list(out):
        if out[name] is None:
            del out[name]
    return out


def frame_to_fields(frame: Frame) -> dict[str, Any]:
    """A JSON object describing ``frame``: ``{"type": NAME, ...fields}``."""
    if isinstance(frame, DataFrame):
        return {"type": "DATA", "data": bytes(frame.data).hex()}
    if isinstance(frame, RequestFrame):
        return {"type": "REQUEST", "header": _struct_fields(frame.header)}
    if isinstance(frame, ResponseFrame):
        return {"type": "RESPONSE", "header": _struct_fields(frame.header)}
    if isinstance(frame, ErrorFrame):
        return {"type": "ERROR", "code": _code_name(frame.code), "reason": frame.reason}
    if isinstance(frame, ChecksumsFrame):
        return {
            "type": "CHECKSUMS",
            "first_block": frame.first_block,
            "checksums": [f"{c:08x}" for c in frame.checksums],
        }
    if isinstance(frame, TrailerFrame):
        return {"type": "TRAILER", "trailer": _struct_fields(frame.trailer)}
    if isinstance(frame, ListingFrame):
        return {"type": "LISTING", "listing": _to_json(frame.listing)}
    if isinstance(frame, SettingsFrame):
        return {"type": "SETTINGS", "settings": [[k, v] for k, v in frame.settings]}
    if isinstance(frame, GoawayFrame):
        return {"type": "GOAWAY", "stream_id": frame.stream_id}
    if isinstance(frame, UnknownFrame):
        return {"type": "UNKNOWN", "frame_type": frame.frame_type, "length": frame.length}
    return {
        "type": "MALFORMED",
        "frame_type": FrameType(frame.frame_type).name,
        "code": _code_name(frame.code),
    }


def frame_from_fields(fields: dict[str, Any]) -> Frame:
    """The frame a :func:`frame_to_fields` object describes."""
    kind = fields["type"]
    if kind == "DATA":
        return DataFrame(bytes.fromhex(fields["data"]))
    if kind == "REQUEST":
        return RequestFrame(message_from_fields(RequestHeader, fields["header"]))
    if kind == "RESPONSE":
        return ResponseFrame(message_from_fields(ResponseHeader, fields["header"]))
    if kind == "ERROR":
        return ErrorFrame(_code_value(fields["code"]), fields["reason"])
    if kind == "CHECKSUMS":
        return ChecksumsFrame(fields["first_block"], tuple(int(c, 16) for c in fields["checksums"]))
    if kind == "TRAILER":
        return TrailerFrame(message_from_fields(Trailer, fields["trailer"]))
    if kind == "LISTING":
        return ListingFrame(message_from_fields(Listing, fields["listing"]))
    if kind == "SETTINGS":
        return SettingsFrame(tuple((int(k), int(v)) for k, v in fields["settings"]))
    if kind == "GOAWAY":
        return GoawayFrame(fields["stream_id"])
    if kind == "UNKNOWN":
        return UnknownFrame(fields["frame_type"], fields["length"])
    raise ValueError(f"no frame of type {kind!r}")


def _code_name(code: int) -> str | int:
    try:
        return ErrorCode(code).name
    except ValueError:
        return code


def _code_value(code: str | int) -> int:
    return ErrorCode[code] if isinstance(code, str) else int(code)


def event_to_fields(event: ev.Event) -> dict[str, Any]:
    """A JSON object describing a quicstore event: ``{"event": ClassName, ...fields}``."""
    out: dict[str, Any] = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name == "code":
            value = _code_name(value)
        elif isinstance(value, msgspec.Struct):
            value = _struct_fields(value) if not isinstance(value, Listing) else _to_json(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).hex()
        elif f.name == "checksums":
            value = [f"{c:08x}" for c in value]
        elif f.name == "settings":
            value = {SettingId(k).name: v for k, v in value.to_pairs()}
        out[f.name] = value
    return out
