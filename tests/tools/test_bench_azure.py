"""tools/bench/azure.py end to end: the quick profile once (one repetition), against a real
Azurite and a real gateway; every row produced a rate, every verification pass read the
expected bytes, and the run left no scratch dir behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.azurite import missing_tools

pytestmark = pytest.mark.slow


def test_quick_profile_measures_gateway_and_sdk_rows(tmp_path: Path) -> None:
    problem = missing_tools()
    if problem:
        pytest.skip(f"Azurite needs Node.js: {problem}")
    pytest.importorskip("azure.storage.blob", reason="the 'azure' extra is not installed")
    from tools.bench import azure

    out = tmp_path / "out.json"
    scratch = tmp_path / "scratch"
    code = azure.main(["--quick", "--reps", "1", "--json", str(out), "--workdir", str(scratch)])

    assert code == 0
    doc = json.loads(out.read_text())
    assert not doc["failure"] and not doc["interrupted"]
    rows = {r["key"] for r in doc["rows"]}
    assert rows == {"gateway", "sdk", "sdk-defaults"}
    cells = {(c["system"], c["workload"]): c for c in doc["cells"]}
    assert set(cells) == {(r, w) for r in rows for w in ("whole", "range")}
    for cell in cells.values():
        assert cell["status"] == "ok", cell
        assert cell["summary"]["mb_per_s"] > 0
        assert cell["summary"]["client_cpu_s_per_gb"] is not None
        assert cell["summary"]["azurite_cpu_s_per_gb"] is not None
    for key in ("whole", "range"):
        assert cells[("gateway", key)]["summary"]["server_cpu_s_per_gb"] is not None
    totals = {w["id"]: w["total_bytes"] for w in doc["workloads"]}
    verified = [s for s in doc["samples"] if s["verify"]]
    assert {(s["row"], s["workload"]) for s in verified} == set(cells)
    for s in verified:
        assert s["status"] == "ok" and s["sha256_ok"] is True, s
    for s in doc["samples"]:
        if not s["verify"]:
            assert s["status"] == "ok" and s["bytes"] == totals[s["workload"]], s
    assert list(scratch.iterdir()) == []  # the run's scratch dir is gone
