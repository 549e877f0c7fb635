"""``quicstore demo``: the quick-start job, end to end on this machine.

Starts a gateway (a child process, as in production) on a fresh local disk store with a
self-signed certificate and token auth, uploads a sample dataset of shards, reads it back
through the shard reader in a seeded shuffled order with prefetch, checks every byte, prints
throughput, and stops the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import shutil
import signal
import sys
import time

from ..client.client import Client
from ..client.shards import ShardReader
from ..server.state import STATE_DIR, active_secret

READY = re.compile(r"listening on quicstore://([^:\s]+):(\d+)")


async def _start_gateway(root: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quicstore",
        "serve",
        "--root",
        root,
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            break
        match = READY.search(line.decode(errors="replace"))
        if match:
            return process, int(match.group(2))
    process.kill()
    await process.wait()
    raise RuntimeError("the gateway did not start (see 'quicstore serve --debug')")


async def run_demo(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root)
    if os.path.exists(root) and not args.keep:
        shutil.rmtree(root)
    print(f"1. starting a gateway on a local disk store in {root}")
    process, port = await _start_gateway(root)
    try:
        kid, secret = active_secret(__import__("pathlib").Path(root), None)
        from ..auth import mint_token

        token = mint_token(
            secret,
            kid=kid,
            bucket="datasets",
            ops=["read", "write", "list"],
            now=int(time.time()),
            ttl=3600,
        )
        url = f"quicstore://127.0.0.1:{port}"
        ca = os.path.join(root, STATE_DIR, "cert.pem")
        print(f"   gateway at {url}, certificate {ca}, token scoped to bucket 'datasets'")
        async with Client(url, token=token, ca_file=ca) as client:
            count, size = args.shards, args.shard_size
            rng = random.Random(7)
            digests: dict[str, bytes] = {}
            print(f"2. uploading {count} shards of {size / 2**20:.1f} MiB")
            started = time.perf_counter()
            semaphore = asyncio.Semaphore(8)

            async def upload(i: int) -> None:
                key = f"demo/train-{i:05d}.bin"
                body = rng.randbytes(size)
                digests[key] = hashlib.sha256(body).digest()
                async with semaphore:
                    await client.put("datasets", key, body)

            await asyncio.gather(*(upload(i) for i in range(count)))
            put_seconds = time.perf_counter() - started
            total = count * size
            print(
                f"   {total / 1e6:.1f} MB in {put_seconds:.2f}s: "
                f"{total / put_seconds / 1e6:.1f} MB/s"
            )
            print(
                "3. reading the dataset back through the shard reader "
                "(seeded shuffle, 8 shards prefetched)"
            )
            reader = await ShardReader.from_prefix(
                client, "datasets", "demo/", shuffle=True, seed=1, prefetch=8
            )
            started = time.perf_counter()
            seen = 0
            async for shard in reader:
                if hashlib.sha256(shard.data).digest() != digests[shard.key]:
                    print(f"   MISMATCH in {shard.key}")
                    return 6
                seen += 1
            get_seconds = time.perf_counter() - started
            print(
                f"   {seen} shards, {reader.bytes_read / 1e6:.1f} MB in {get_seconds:.2f}s: "
                f"{reader.bytes_read / get_seconds / 1e6:.1f} MB/s, every byte verified"
            )
    finally:
        print("4. stopping the gateway")
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("done")
    return 0
