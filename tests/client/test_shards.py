"""The shard reader (quicstore.client.shards)."""

from __future__ import annotations

import os

import pytest

from quicstore.client.client import Client
from quicstore.client.shards import Checkpoint, ShardReader, epoch_order, partition

KEYS = [f"shards/{i:05d}" for i in range(1000)]


@pytest.mark.parametrize("world_size", range(1, 9))
@pytest.mark.parametrize("num_workers", [1, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_shard_exactly_once_per_epoch(
    world_size: int, num_workers: int, shuffle: bool
) -> None:
    for epoch in (0, 1):
        order = epoch_order(KEYS, shuffle=shuffle, seed=42, epoch=epoch)
        taken = [
            key
            for rank in range(world_size)
            for worker in range(num_workers)
            for _, key in partition(
                order, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers
            )
        ]
        assert sorted(taken) == sorted(KEYS)
        assert len(taken) == len(set(taken))


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    a = epoch_order(KEYS, shuffle=True, seed=1, epoch=0)
    assert a == epoch_order(list(reversed(KEYS)), shuffle=True, seed=1, epoch=0)
    assert a != epoch_order(KEYS, shuffle=True, seed=1, epoch=1)
    assert a != epoch_order(KEYS, shuffle=True, seed=2, epoch=0)
    assert epoch_order(KEYS, shuffle=False, seed=1, epoch=3) == sorted(KEYS)


async def test_reader_yields_its_share_and_resumes_from_a_checkpoint(client: Client) -> None:
    bodies = {f"ds/{i:03d}": os.urandom(1000 + i) for i in range(40)}
    for key, body in bodies.items():
        await client.put("data", key, body)
    options = {"shuffle": True, "seed": 7, "epoch": 2, "rank": 1, "world_size": 3, "prefetch": 3}
    full = await ShardReader.from_prefix(client, "data", "ds/", **options)  # type: ignore[arg-type]
    uninterrupted = [(s.key, bytes(s.data)) async for s in full]
    assert all(bodies[k] == v for k, v in uninterrupted)
    assert len(uninterrupted) == len(full) == 13 or len(uninterrupted) == 14

    first = await ShardReader.from_prefix(client, "data", "ds/", **options)  # type: ignore[arg-type]
    head = []
    async for shard in first:
        head.append((shard.key, bytes(shard.data)))
        if len(head) == 5:
            break
    saved = Checkpoint.from_dict(first.checkpoint().to_dict())
    assert saved == Checkpoint(epoch=2, position=5)
    resumed = await ShardReader.from_prefix(client, "data", "ds/", checkpoint=saved, **options)  # type: ignore[arg-type]
    tail = [(s.key, bytes(s.data)) async for s in resumed]
    assert head + tail == uninterrupted
