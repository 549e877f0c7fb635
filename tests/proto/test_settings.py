"""Settings (quicstore.proto.settings)."""

from __future__ import annotations

import pytest

from quicstore.proto.codes import ErrorCode, SettingId, is_reserved_codepoint
from quicstore.proto.errors import RemoteProtocolError
from quicstore.proto.frames import SettingsFrame
from quicstore.proto.settings import Settings


def test_defaults_round_trip_through_a_frame() -> None:
    s = Settings(block_size=1 << 20, max_list_page=7)
    assert Settings.from_frame(s.to_frame()) == s


def test_grease_setting_is_reserved_and_ignored() -> None:
    frame = Settings().to_frame(grease=3)
    grease = [k for k, _ in frame.settings if k not in set(SettingId)]
    assert len(grease) == 1 and is_reserved_codepoint(grease[0])
    assert Settings.from_frame(frame) == Settings()


def test_unknown_settings_are_ignored() -> None:
    assert Settings.from_frame(SettingsFrame(((0x99, 5), (0x01, 8192)))) == Settings(
        max_frame_size=8192
    )


@pytest.mark.parametrize(
    ("ident", "value"),
    [
        (SettingId.BLOCK_SIZE, 5000),
        (SettingId.BLOCK_SIZE, 2048),
        (SettingId.MAX_FRAME_SIZE, 100),
        (SettingId.MAX_LIST_PAGE, 0),
    ],
)
def test_out_of_range_values_are_settings_errors(ident: int, value: int) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        Settings.from_frame(SettingsFrame(((ident, value),)))
    assert exc.value.code == ErrorCode.QS_SETTINGS_ERROR


def test_local_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        Settings(block_size=3000)
