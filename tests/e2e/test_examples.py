"""The programs under examples/ run as written against a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from quicstore.client.client import Client

from .serverproc import GatewayProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_pull_shards_example(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    try:
        async with Client(gw.url, ca_file=gw.ca) as c:
            for i in range(12):
                await c.put("datasets", f"train/{i:04d}.bin", os.urandom(10_000 + i))
        for rank in range(2):
            result = subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLES / "pull_shards.py"),
                    gw.url,
                    "datasets",
                    "train/",
                    "--ca",
                    str(gw.ca),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"},
            )
            assert result.returncode == 0, result.stderr
            lines = [line for line in result.stdout.splitlines() if "train/" in line]
            assert len(lines) == 6
            assert "6 shards" in result.stdout
    finally:
        assert gw.stop() == 0
