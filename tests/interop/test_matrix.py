"""The interop matrix (``python -m interop.run --quick``) as a pytest test.

Marked ``interop`` (deselected by default): run with ``pytest -m interop tests/interop``. It
installs missing peers first (``python -m interop.install``: apt and PyPI), then runs the quick
matrix (bounded: 20 minutes) and fails if any cell failed, naming each one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK_BOUND_S = 1200


@pytest.mark.interop
def test_quick_matrix(tmp_path: Path) -> None:
    """No cell of the quick matrix fails; unsupported cells carry a reason."""
    install = subprocess.run(
        [sys.executable, "-m", "interop.install"], cwd=REPO, capture_output=True, text=True
    )
    assert install.returncode == 0, install.stdout + install.stderr
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "interop.run", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=QUICK_BOUND_S,
    )
    matrix = json.loads((out / "matrix.json").read_text())
    cells = matrix["cells"]
    assert len(cells) == matrix["meta"]["planned"], run.stdout[-3000:]
    failed = [f"{c['server']} <- {c['client']} {c['testcase']}: {c['reason'][:300]}"
              for c in cells if c["status"] == "fail"]  # fmt: skip
    assert not failed, "\n".join(failed)
    assert all(c["reason"] for c in cells if c["status"] == "unsupported")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
