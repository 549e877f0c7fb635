"""Hook to the project's userspace UDP impairment proxy (tools/impair_proxy.py), for (e).

The proxy is started per measurement in front of a running server and stopped by PID after
it. Its CLI prints ``impair-proxy listening 127.0.0.1:PORT`` when ready; that line is the
readiness signal (no sleeps). When the script is missing, (e) cells are "n/a".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tools.bench.procs import Child, wait_ready_line

if TYPE_CHECKING:
    from tools.bench.systems.base import BenchEnv

READY_RE = re.compile(r"impair-proxy listening (\S+):(\d+)")
SEED = 1


def script(repo_root: Path) -> Path:
    """Where the proxy script lives."""
    return repo_root / "tools" / "impair_proxy.py"


def available(repo_root: Path) -> bool:
    """True when the proxy script exists."""
    return script(repo_root).is_file()


def start_proxy(
    env: BenchEnv,
    upstream_port: int,
    delay_ms: float,
    loss: float,
    *,
    lifetime_s: float,
) -> tuple[Child, int]:
    """Start the proxy towards 127.0.0.1:``upstream_port``: (process, listening port).

    ``delay_ms`` is one-way per direction (ms), ``loss`` the drop probability each way,
    ``lifetime_s`` a hard bound after which the proxy exits by itself (s).
    """
    argv = [
        env.python, str(script(env.repo_root)),
        "--listen", "127.0.0.1:0",
        "--upstream", f"127.0.0.1:{upstream_port}",
        "--delay-ms", f"{delay_ms:g}",
        "--loss", f"{loss:g}",
        "--seed", str(SEED),
        "--lifetime", f"{lifetime_s:.0f}",
    ]  # fmt: skip
    name = env.unique("impair-proxy")
    child = env.procs.spawn(
        "impair-proxy", argv, cwd=env.repo_root, log_path=env.path("logs", f"{name}.log"),
        capture_stdout=True,
    )
    try:
        line = wait_ready_line(child, "impair-proxy listening", timeout=20.0)
    except Exception:
        env.procs.stop(child)
        raise
    match = READY_RE.search(line)
    if match is None:
        env.procs.stop(child)
        raise RuntimeError(f"unexpected proxy ready line: {line!r}")
    return child, int(match.group(2))
