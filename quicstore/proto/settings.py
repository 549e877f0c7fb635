"""Connection settings (spec Section 5): defaults, allowed ranges and the SETTINGS frame."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .codes import ErrorCode, SettingId, grease_value
from .errors import connection_error
from .frames import SettingsFrame


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


_RANGES: dict[SettingId, tuple[int, int]] = {
    SettingId.MAX_FRAME_SIZE: (4096, 16 * 1024 * 1024),
    SettingId.MAX_KEY_LENGTH: (1, 65535),
    SettingId.MAX_METADATA_SIZE: (0, 1024 * 1024),
    SettingId.MAX_CONCURRENT_REQUESTS: (1, 65536),
    SettingId.BLOCK_SIZE: (4096, 16 * 1024 * 1024),
    SettingId.MAX_OBJECT_SIZE: (0, (1 << 62) - 1),
    SettingId.MAX_LIST_PAGE: (1, 100000),
    SettingId.CHUNK_SIZE: (1024, 16 * 1024 * 1024),
}
"""Allowed inclusive range of each setting (spec Section 5)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The values one endpoint announces in its SETTINGS frame (spec Section 5).

    The defaults are the spec's defaults, which hold until the peer's SETTINGS arrives.
    """

    max_frame_size: int = 65536
    """Largest non-DATA frame payload accepted, bytes. 64 KiB holds a LIST page of ~500 keys."""
    max_key_length: int = 1024
    """Longest key accepted, UTF-8 bytes (S3's limit)."""
    max_metadata_size: int = 8192
    """Largest encoded ``meta`` map stored, bytes."""
    max_concurrent_requests: int = 128
    """Requests served at once per connection."""
    block_size: int = 65536
    """Checksum block size for new objects, bytes: 64 KiB bounds the bytes re-read to verify a
    range edge and costs 4 bytes of checksum per 64 KiB (0.006 %)."""
    max_object_size: int = 0
    """Largest PUT body, bytes; 0 means no limit beyond the store's."""
    max_list_page: int = 1000
    """Most entries per LISTING."""
    chunk_size: int = 262144
    """Preferred DATA frame and disk read size, bytes."""

    def __post_init__(self) -> None:
        for setting_id, value in self.to_pairs():
            _check_value(SettingId(setting_id), value, ValueError)

    def to_pairs(self) -> list[tuple[int, int]]:
        """``(identifier, value)`` for every setting, in identifier order."""
        return [(int(sid), getattr(self, sid.name.lower())) for sid in SettingId]

    def to_frame(self, grease: int | None = None) -> SettingsFrame:
        """The SETTINGS frame announcing these values, with one greasing setting if
        ``grease`` (an index N for ``0x1f * N + 0x21``) is given."""
        pairs = self.to_pairs()
        if grease is not None:
            pairs.append((grease_value(grease), grease % 0x3F))
        return SettingsFrame(tuple(pairs))

    @classmethod
    def from_frame(cls, frame: SettingsFrame) -> Settings:
        """The peer's settings: its announced values over the defaults, unknown ids ignored.

        Raises RemoteProtocolError(QS_SETTINGS_ERROR) for a value outside its range.
        """
        values: dict[str, int] = {}
        for ident, value in frame.settings:
            try:
                setting_id = SettingId(ident)
            except ValueError:
                continue  # Section 4.10: unknown identifiers are ignored
            _check_value(setting_id, value, None)
            values[setting_id.name.lower()] = value
        return dataclasses.replace(cls(), **values)


def _check_value(setting_id: SettingId, value: int, error: type[ValueError] | None) -> None:
    low, high = _RANGES[setting_id]
    ok = low <= value <= high
    if ok and setting_id == SettingId.BLOCK_SIZE:
        ok = _is_power_of_two(value)
    if ok:
        return
    reason = f"{setting_id.name} = {value} is outside its allowed range"
    if error is not None:
        raise error(reason)
    raise connection_error(ErrorCode.QS_SETTINGS_ERROR, reason)
