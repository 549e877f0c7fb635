"""QUIC variable-length integers (RFC 9000, Section 16), for frame headers and payloads."""

from __future__ import annotations

VARINT_MAX = (1 << 62) - 1
"""Largest value a variable-length integer can hold."""


def varint_size(value: int) -> int:
    """Bytes needed to encode ``value`` minimally (1, 2, 4 or 8)."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    if value <= VARINT_MAX:
        return 8
    raise ValueError(f"{value} does not fit in a QUIC variable-length integer")


def encode_varint(value: int) -> bytes:
    """Encode ``value`` in its minimal form. Raises ValueError if out of range."""
    if value < 0:
        raise ValueError("variable-length integers are unsigned")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError(f"{value} does not fit in a QUIC variable-length integer")


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """Decode the integer at ``buf[pos:]``.

    Returns ``(value, next_pos)``, or None if ``buf`` ends before the integer does.
    Non-minimal encodings are accepted, as RFC 9000 requires.
    """
    if pos >= len(buf):
        return None
    first = buf[pos]
    size = 1 << (first >> 6)
    end = pos + size
    if end > len(buf):
        return None
    if size == 1:
        return first, end
    value = int.from_bytes(buf[pos:end], "big")
    return value & ((1 << (8 * size - 2)) - 1), end
