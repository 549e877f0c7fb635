"""A synchronous facade over the async client, and a PyTorch-style iterable dataset.

The async client runs on an event loop in a background thread; each method submits a
coroutine and waits for it. Safe to use from several threads at once.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from ..store.base import ListPage, ObjectInfo
from .client import Client, ClientConfig
from .fanout import GetResult
from .shards import Checkpoint, Shard, ShardReader

T = TypeVar("T")


class SyncClient:
    """Blocking version of :class:`~quicstore.client.client.Client` (same methods)."""

    def __init__(
        self,
        url: str = "quicstore://127.0.0.1:4433",
        config: ClientConfig | None = None,
        **overrides: object,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="quicstore-loop", daemon=True
        )
        self._thread.start()
        self._client: Client = self._call(self._make(url, config, overrides))

    @staticmethod
    async def _make(url: str, config: ClientConfig | None, overrides: dict[str, object]) -> Client:
        return Client(url, config, **overrides)

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The async client underneath (use only from its loop)."""
        return self._client

    def get(self, bucket: str, key: str, **kw: Any) -> bytearray:
        return self._call(self._client.get(bucket, key, **kw))  # type: ignore[no-any-return]

    def get_with_info(self, bucket: str, key: str, **kw: Any) -> tuple[GetResult, bytearray]:
        return self._call(self._client.get_with_info(bucket, key, **kw))  # type: ignore[no-any-return]

    def get_into(
        self, bucket: str, key: str, buffer: bytearray | memoryview, **kw: Any
    ) -> GetResult:
        return self._call(self._client.get_into(bucket, key, buffer, **kw))  # type: ignore[no-any-return]

    def get_file(self, bucket: str, key: str, path: str | os.PathLike[str], **kw: Any) -> GetResult:
        return self._call(self._client.get_file(bucket, key, path, **kw))  # type: ignore[no-any-return]

    def put(self, bucket: str, key: str, data: Any, **kw: Any) -> ObjectInfo:
        return self._call(self._client.put(bucket, key, data, **kw))  # type: ignore[no-any-return]

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        return self._call(self._client.stat(bucket, key))  # type: ignore[no-any-return]

    def delete(self, bucket: str, key: str, **kw: Any) -> str:
        return self._call(self._client.delete(bucket, key, **kw))  # type: ignore[no-any-return]

    def list(self, bucket: str, **kw: Any) -> Iterator[ListPage]:
        """Pages of a listing (each page fetched when iterated)."""
        pages = self._client.list(bucket, **kw)
        while True:
            try:
                yield self._call(pages.__anext__())
            except StopAsyncIteration:
                return

    def list_all(self, bucket: str, *, prefix: str = "") -> builtins.list[ObjectInfo]:
        return self._call(self._client.list_all(bucket, prefix=prefix))  # type: ignore[no-any-return]

    def iter_shards(self, reader_factory: Callable[[Client], ShardReader]) -> Iterator[Shard]:
        """Iterate a ShardReader built (on the loop) by ``reader_factory(client)``."""
        reader = self._call(_build(reader_factory, self._client))
        iterator = reader.__aiter__()
        try:
            while True:
                try:
                    yield self._call(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._call(iterator.aclose())

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


async def _build(factory: Callable[[Client], ShardReader], client: Client) -> ShardReader:
    return factory(client)


class ShardDataset:
    """An iterable of shard bytes for training loops, usable as a PyTorch IterableDataset
    without depending on torch: ``torch.utils.data.DataLoader(ShardDataset(...))`` works
    because DataLoader only needs ``__iter__``; inside DataLoader workers each worker reads
    its own partition (from ``torch.utils.data.get_worker_info()`` when torch is present).

    Each iteration is one epoch; call :meth:`set_epoch` between epochs (as with
    DistributedSampler). ``checkpoint`` resumes mid-epoch.
    """

    def __init__(
        self,
        url: str,
        bucket: str,
        keys: Sequence[str],
        *,
        config: ClientConfig | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 4,
        transform: Callable[[Shard], Any] | None = None,
    ) -> None:
        self.url = url
        self.bucket = bucket
        self.keys = list(keys)
        self.config = config
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self.transform = transform
        self.epoch = 0
        self.checkpoint: Checkpoint | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` on the next iteration."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = _worker_info()
        checkpoint = (
            self.checkpoint if self.checkpoint and self.checkpoint.epoch == self.epoch else None
        )
        with SyncClient(self.url, self.config) as client:

            def factory(async_client: Client) -> ShardReader:
                return ShardReader(
                    async_client,
                    self.bucket,
                    self.keys,
                    shuffle=self.shuffle,
                    seed=self.seed,
                    epoch=self.epoch,
                    rank=self.rank,
                    world_size=self.world_size,
                    worker=worker,
                    num_workers=num_workers,
                    prefetch=self.prefetch,
                    checkpoint=checkpoint,
                )

            for shard in client.iter_shards(factory):
                yield self.transform(shard) if self.transform else shard


def _worker_info() -> tuple[int, int]:
    """(worker id, number of workers) inside a torch DataLoader worker, else (0, 1)."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return 0, 1
    info = get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))
