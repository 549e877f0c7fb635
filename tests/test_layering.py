"""The sans-I/O line: the core imports no sockets, event loop, threads, clock or files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "quicstore"
PURE = ["proto", "plan", "auth.py", "certs.py"]
"""Modules that must stay free of I/O: time is passed in, bytes are handed in."""
FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "threading",
    "time",
    "os",
    "io",
    "pathlib",
    "select",
    "selectors",
    "subprocess",
    "random",
    "shutil",
    "tempfile",
    "concurrent",
    "multiprocessing",
    "logging",
    "uvloop",
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if f.exists()]


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"imports {name}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"calls {node.func.id}()")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"now", "utcnow", "today"}
            and isinstance(node.value, ast.Name | ast.Attribute)
        ):
            found.append(f"reads the clock ({node.attr})")
    return found


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_does_no_io(path: Path) -> None:
    assert violations(path.read_text()) == []


def test_the_check_itself_catches_io() -> None:
    assert violations("import socket\nfrom time import monotonic\nopen('x')\n") == [
        "imports socket",
        "imports time",
        "calls open()",
    ]
    assert violations("import datetime\ndatetime.datetime.now()\n") == ["reads the clock (now)"]
