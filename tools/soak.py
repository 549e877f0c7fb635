"""A seeded, bounded soak of a gateway: many connections, a mix of operations, every byte
verified, the gateway's memory watched.

    python tools/soak.py --duration 300 --connections 50 --seed 1 [--json]

Starts a gateway process on a fresh disk store (unless ``--url`` names a running one with
``--ca``), uploads a set of shared objects, then runs ``--connections`` clients (one QUIC
connection each) until the duration is up. Each client draws operations from its own seeded
generator: GET and ranged GET of the shared objects, and PUT, GET, LIST and DELETE of its own
keys, checking every result against what it knows must be there. Prints a summary (JSON with
``--json``) and exits 1 on any error, any mismatch, or memory that keeps growing (the
gateway's RSS over the second half of the run more than ``--rss-slack`` MiB above the first
half's peak).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quicstore
from quicstore.client.client import Client

READY = re.compile(r"listening on quicstore://([^:\s]+):(\d+)")
KIB = 1024
MIB = 1024 * KIB


@dataclass
class Totals:
    """What all clients did."""

    ops: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def client_loop(index: int, url: str, ca: Path, seed: int, deadline: float,
                      shared: dict[str, bytes], totals: Totals) -> None:
    rng = random.Random(seed * 1000 + index)
    mine: dict[str, bytes] = {}
    names = sorted(shared)
    prefix = f"soak/c{index:03d}/"
    async with Client(url, ca_file=ca) as c:
        while time.monotonic() < deadline:
            op = rng.choices(["get", "range", "put", "get_own", "list", "delete"],
                             weights=[30, 20, 20, 15, 5, 10])[0]
            try:
                if op == "get":
                    key = rng.choice(names)
                    data = await c.get("data", key)
                    totals.bytes_read += len(data)
                    if bytes(data) != shared[key]:
                        totals.mismatches.append(f"GET {key}")
                elif op == "range":
                    key = rng.choice(names)
                    size = len(shared[key])
                    offset = rng.randrange(size)
                    length = rng.randint(1, size - offset)
                    data = await c.get("data", key, offset=offset, length=length)
                    totals.bytes_read += len(data)
                    if bytes(data) != shared[key][offset : offset + length]:
                        totals.mismatches.append(f"GET {key} [{offset}+{length}]")
                elif op == "put":
                    key = prefix + f"k{rng.randrange(8)}"
                    body = rng.randbytes(rng.choice([0, 1, 1000, 64 * KIB, 300 * KIB, MIB]))
                    info = await c.put("data", key, body)
                    totals.bytes_written += len(body)
                    mine[key] = body
                    if info.sha256 != hashlib.sha256(body).digest():
                        totals.mismatches.append(f"PUT {key} digest")
                elif op == "get_own" and mine:
                    key = rng.choice(sorted(mine))
                    data = await c.get("data", key)
                    totals.bytes_read += len(data)
                    if bytes(data) != mine[key]:
                        totals.mismatches.append(f"GET own {key}")
                elif op == "list":
                    listed = {e.key for e in await c.list_all("data", prefix=prefix)}
                    if listed != set(mine):
                        totals.mismatches.append(f"LIST {prefix}: {sorted(listed ^ set(mine))}")
                elif op == "delete" and mine:
                    key = rng.choice(sorted(mine))
                    await c.delete("data", key)
                    del mine[key]
                    try:
                        await c.stat("data", key)
                        totals.mismatches.append(f"DELETE {key}: still there")
                    except quicstore.NotFound:
                        pass
                else:
                    continue
                totals.ops[op] += 1
            except quicstore.QuicstoreError as exc:
                totals.errors.append(f"{op}: {exc}")


async def soak(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="quicstore-soak-"))
    process = None
    try:
        if args.url:
            url, ca, pid = args.url, Path(args.ca), args.pid
        else:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "quicstore", "serve", "--root", str(workdir),
                "--listen", "127.0.0.1:0", "--open", "--max-connections-per-address", "1000",
                "--retry-threshold", "0",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            assert process.stdout is not None
            while True:
                line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
                if not line:
                    raise RuntimeError("gateway did not start")
                match = READY.search(line)
                if match:
                    break
            url = f"quicstore://127.0.0.1:{match.group(2)}"
            ca, pid = workdir / ".quicstore" / "cert.pem", process.pid
        rng = random.Random(args.seed)
        shared = {f"shared/{i:02d}": rng.randbytes(rng.choice([1, 4 * KIB, 100 * KIB, MIB,
                                                                 4 * MIB]))
                  for i in range(20)}
        async with Client(url, ca_file=ca) as loader:
            for key, body in shared.items():
                await loader.put("data", key, body)
        totals = Totals()
        started = time.monotonic()
        deadline = started + args.duration
        samples: list[tuple[float, float]] = []

        async def sample() -> None:
            while time.monotonic() < deadline:
                if pid:
                    samples.append((time.monotonic() - started, rss_mib(pid)))
                await asyncio.sleep(1.0)

        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(client_loop(i, url, ca, args.seed, deadline, shared, totals)
                               for i in range(args.connections)))
        sampler.cancel()
        elapsed = time.monotonic() - started
        half = args.duration / 2
        first = [r for t, r in samples if t < half]
        second = [r for t, r in samples if t >= half]
        growth = (max(second) - max(first)) if first and second else 0.0
        return {
            "duration_s": round(elapsed, 1), "connections": args.connections,
            "seed": args.seed, "ops": dict(totals.ops), "ops_total": sum(totals.ops.values()),
            "errors": len(totals.errors), "error_samples": totals.errors[:5],
            "mismatches": len(totals.mismatches), "mismatch_samples": totals.mismatches[:5],
            "mb_read": round(totals.bytes_read / 1e6, 1),
            "mb_written": round(totals.bytes_written / 1e6, 1),
            "rss_mib_first_half_max": round(max(first), 1) if first else None,
            "rss_mib_second_half_max": round(max(second), 1) if second else None,
            "rss_mib_growth": round(growth, 1),
        }
    finally:
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="a running gateway (with --ca and --pid)")
    parser.add_argument("--ca", help="its certificate")
    parser.add_argument("--pid", type=int, default=0, help="its PID, to watch its memory")
    parser.add_argument("--rss-slack", type=float, default=32.0,
                        help="allowed RSS growth between the halves of the run, MiB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    failed = result["errors"] or result["mismatches"] or (
        float(result["rss_mib_growth"] or 0) > args.rss_slack  # type: ignore[arg-type]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
