"""The dataset shard reader: shards in order or a seeded shuffle, partitioned across ranks
and data-loader workers, prefetched in the background, resumable from a small checkpoint.

Partitioning: the epoch's sequence (sorted keys, shuffled with ``seed + epoch`` if asked) is
dealt round-robin to ``world_size x num_workers`` readers; reader ``rank * num_workers +
worker`` takes every element at its index modulo that count. Each shard is therefore read
exactly once per epoch across all readers, and every reader computes the same sequence
without talking to the others. A checkpoint is ``(epoch, position)``: how many of its own
shards a reader has handed out in that epoch; resuming skips exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ..store.base import ObjectInfo
from .client import Client


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a reader is: resume a run from here and it yields what remained."""

    epoch: int
    position: int
    """Shards of this reader's share already handed out in ``epoch``."""

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Checkpoint:
        return cls(int(data["epoch"]), int(data["position"]))


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard's bytes."""

    key: str
    data: bytearray
    info: ObjectInfo
    index: int
    """Position of the shard in the epoch's global sequence."""


def epoch_order(keys: Sequence[str], *, shuffle: bool, seed: int, epoch: int) -> list[str]:
    """The global sequence of one epoch: sorted, then shuffled by ``(seed, epoch)``."""
    order = sorted(keys)
    if shuffle:
        random.Random(f"quicstore:{seed}:{epoch}").shuffle(order)
    return order


def partition(
    order: Sequence[str], *, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
) -> list[tuple[int, str]]:
    """This reader's share of an epoch: ``(global index, key)`` pairs, in order."""
    if not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError("rank/worker out of range")
    readers = world_size * num_workers
    me = rank * num_workers + worker
    return [(i, key) for i, key in enumerate(order) if i % readers == me]


class ShardReader:
    """Async iterator over this reader's shards for one epoch, ``prefetch`` ahead."""

    def __init__(
        self,
        client: Client,
        bucket: str,
        keys: Sequence[str],
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        prefetch: int = 4,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """``keys``: every shard of the dataset (all readers must pass the same set).
        ``prefetch``: shards fetched ahead of the one being consumed."""
        self.client = client
        self.bucket = bucket
        self.epoch = checkpoint.epoch if checkpoint else epoch
        self.share = partition(
            epoch_order(keys, shuffle=shuffle, seed=seed, epoch=self.epoch),
            rank=rank,
            world_size=world_size,
            worker=worker,
            num_workers=num_workers,
        )
        self.position = checkpoint.position if checkpoint else 0
        self.prefetch = max(1, prefetch)
        self.bytes_read = 0

    @classmethod
    async def from_prefix(
        cls, client: Client, bucket: str, prefix: str, **options: object
    ) -> ShardReader:
        """A reader over every key under ``prefix``."""
        keys = [info.key for info in await client.list_all(bucket, prefix=prefix)]
        return cls(client, bucket, keys, **options)  # type: ignore[arg-type]

    def checkpoint(self) -> Checkpoint:
        """Where this reader is now (after the shards handed out so far)."""
        return Checkpoint(self.epoch, self.position)

    def __len__(self) -> int:
        return len(self.share)

    async def _fetch(self, index: int, key: str) -> Shard:
        result, data = await self.client.get_with_info(self.bucket, key)
        return Shard(key, data, result.info, index)

    def __aiter__(self) -> AsyncIterator[Shard]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Shard]:
        pending: deque[asyncio.Task[Shard]] = deque()
        upcoming = iter(self.share[self.position :])
        loop = asyncio.get_running_loop()

        def top_up() -> None:
            while len(pending) < self.prefetch:
                item = next(upcoming, None)
                if item is None:
                    return
                pending.append(loop.create_task(self._fetch(*item)))

        try:
            top_up()
            while pending:
                shard = await pending.popleft()
                top_up()
                self.position += 1
                self.bytes_read += len(shard.data)
                yield shard
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
