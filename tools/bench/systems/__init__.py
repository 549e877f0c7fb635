"""Registered systems. To add one: a module here with ``systems() -> list[System]`` (see
tools/bench/systems/base.py) and one line in ``MODULES``. Modules are imported lazily, so a
system whose dependencies are missing fails alone (its row shows the error).
"""

from __future__ import annotations

import importlib

from tools.bench.systems.base import System

MODULES = [
    "tools.bench.systems.quicstore",
    "tools.bench.systems.aioquic_example",
    "tools.bench.systems.ngtcp2",
    "tools.bench.systems.aiohttp_https",
    "tools.bench.systems.nginx",
]
"""Table order; one line per system module."""


def load_all() -> tuple[list[System], list[str]]:
    """All registered systems, plus an error line for each module that failed to import."""
    found: list[System] = []
    errors: list[str] = []
    for name in MODULES:
        try:
            found.extend(importlib.import_module(name).systems())
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return found, errors
