"""The bench's command line: which systems a run takes."""

from __future__ import annotations

from tools.bench.cli import _select
from tools.bench.systems import load_all


def test_the_default_run_leaves_out_optional_systems_and_naming_them_runs_them() -> None:
    systems, errors = load_all()
    assert not errors
    keys = {s.key for s in _select(systems, None)}
    assert "aioquic-uvloop" not in keys  # optional: minutes of a full run at 5-9 MB/s
    assert {"quicstore", "aioquic", "aioquic-16k", "ngtcp2", "aiohttp", "aiohttp-uvloop"} <= keys
    assert "aioquic-uvloop" in {s.key for s in _select(systems, "aioquic")}
    assert [s.key for s in _select(systems, "=aioquic-uvloop")] == ["aioquic-uvloop"]
