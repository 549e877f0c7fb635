"""Pull a dataset's shards through the shard reader (async), as a training loop would.

    python examples/pull_shards.py quicstore://127.0.0.1:4433 datasets train/ --ca CERT

Reads the keys under the prefix in a seeded shuffled order, 8 shards ahead, partitioned for
this rank (RANK / WORLD_SIZE environment variables, as torchrun sets them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import quicstore
from quicstore.client.shards import ShardReader


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("bucket")
    parser.add_argument("prefix")
    parser.add_argument("--ca")
    parser.add_argument("--epoch", type=int, default=0)
    args = parser.parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    async with quicstore.Client(args.url, ca_file=args.ca) as client:
        reader = await ShardReader.from_prefix(
            client, args.bucket, args.prefix, shuffle=True, seed=1234, epoch=args.epoch,
            rank=rank, world_size=world, prefetch=8,
        )
        started = time.perf_counter()
        async for shard in reader:
            # a real loop would decode and train on shard.data here
            print(f"{shard.index:6d} {shard.key} {len(shard.data)} bytes")
        seconds = time.perf_counter() - started
        print(f"{len(reader)} shards, {reader.bytes_read / seconds / 1e6:.1f} MB/s; "
              f"checkpoint {reader.checkpoint().to_dict()}")


if __name__ == "__main__":
    asyncio.run(main())
