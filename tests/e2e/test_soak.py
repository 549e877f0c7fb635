"""The bounded soak (tools/soak.py): 50 connections, 30 s, every byte verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "tools" / "soak.py"


@pytest.mark.soak
def test_soak_30_seconds_50_connections() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--duration",
            "30",
            "--connections",
            "50",
            "--seed",
            "7",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(summary)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["mismatches"] == 0, summary["mismatch_samples"]
    assert summary["ops_total"] > 500
    assert set(summary["ops"]) == {"get", "range", "put", "get_own", "list", "delete"}
    assert summary["rss_mib_growth"] <= 32
    assert result.returncode == 0
