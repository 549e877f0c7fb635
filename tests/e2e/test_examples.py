"""The programs under examples/ run as written against a gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
async def test_torch_dataloader_example_trains(tmp_path: Path) -> None:
    """examples/torch_dataloader.py uploads a synthetic dataset, then 2 DataLoader workers
    feed every record once per epoch to a model that learns the (separable) problem."""
    pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
    gw = GatewayProcess(tmp_path, extra=["--open"]).start()
    try:
        command = [sys.executable, str(EXAMPLES / "torch_dataloader.py"), gw.url, "datasets"]
        command += ["train/", "--ca", str(gw.ca), "--make-data", "4", "--epochs", "3"]
        result = subprocess.run(
            [*command, "--workers", "2"], capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, result.stderr
        async with Client(gw.url, ca_file=gw.ca) as c:
            listing = await c.list_all("datasets", prefix="train/")
        records = sum(o.size for o in listing) // (17 * 4)
        assert len(listing) == 4 and sum(o.size for o in listing) % (17 * 4) == 0
        epochs = re.findall(r"epoch (\d): (\d+) samples, loss [\d.]+, accuracy ([\d.]+)",
                            result.stdout)  # fmt: skip
        assert [int(e[0]) for e in epochs] == [0, 1, 2], result.stdout
        assert all(int(e[1]) == records for e in epochs), (records, result.stdout)
        assert float(epochs[-1][2]) > 0.9, result.stdout
    finally:
        assert gw.stop() == 0
