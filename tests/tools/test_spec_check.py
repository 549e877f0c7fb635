"""tools/spec_check.py: passes on this tree, fails on inconsistent copies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "tools" / "spec_check.py"


def run_checker(root: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(CHECKER), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for part in ("spec", "quicstore"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_tree_agrees() -> None:
    code, out = run_checker(ROOT)
    assert code == 0, out


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def change_spec_code(root: Path) -> None:
    edit(root / "spec/quicstore.md", "| QS_NOT_FOUND | 0x5124 |", "| QS_NOT_FOUND | 0x5199 |")


def change_code_enum(root: Path) -> None:
    edit(root / "quicstore/proto/codes.py", "QS_FORBIDDEN = 0x5123", "QS_FORBIDDEN = 0x5130")


def change_setting_default(root: Path) -> None:
    edit(
        root / "quicstore/proto/settings.py",
        "max_list_page: int = 1000",
        "max_list_page: int = 999",
    )


def change_transition(root: Path) -> None:
    edit(
        root / "quicstore/proto/state.py",
        "(S.UPLOAD, I.TRAILER): S.COMPLETE,",
        "(S.UPLOAD, I.TRAILER): S.UPLOAD,",
    )


def change_vector_error(root: Path) -> None:
    path = root / "spec/vectors/frames.json"
    data = json.loads(path.read_text())
    data["invalid"][0]["error"] = "QS_NO_SUCH_CODE"
    path.write_text(json.dumps(data))


def drop_goaway_vectors(root: Path) -> None:
    path = root / "spec/vectors/frames.json"
    data = json.loads(path.read_text())
    data["valid"] = [v for v in data["valid"] if v["frame"]["type"] != "GOAWAY"]
    path.write_text(json.dumps(data))


def stale_appendix(root: Path) -> None:
    edit(root / "spec/quicstore.md", "| DATA with 5 bytes |", "| DATA with five bytes |")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (change_spec_code, "error code QS_NOT_FOUND"),
        (change_code_enum, "error code QS_FORBIDDEN"),
        (change_setting_default, "MAX_LIST_PAGE default"),
        (change_transition, "transition ('UPLOAD', 'TRAILER')"),
        (change_vector_error, "unknown error QS_NO_SUCH_CODE"),
        (drop_goaway_vectors, "no valid vector for frame type GOAWAY"),
        (stale_appendix, "Appendix A differs"),
    ],
)
def test_inconsistent_copy_fails(copy: Path, mutate: Callable[[Path], None], expected: str) -> None:
    assert run_checker(copy)[0] == 0
    mutate(copy)
    code, out = run_checker(copy)
    assert code == 1
    assert expected in out
