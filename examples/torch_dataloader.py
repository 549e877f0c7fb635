"""A PyTorch training loop fed from quicstore: shards read by DataLoader workers, decoded into
samples, batched, and used to train a small model (torch optional for quicstore itself).

    # a synthetic dataset (8 shards of float32 records), then 3 epochs with 2 workers:
    python examples/torch_dataloader.py quicstore://127.0.0.1:4433 datasets train/ \\
        --ca CERT --make-data 8 --epochs 3 --workers 2

ShardDataset is an iterable dataset: each DataLoader worker reads its own partition of the
epoch's shuffled shard sequence (so every shard is read once per epoch across workers and
ranks), with shards prefetched in the background and every byte verified. Each shard holds
records of FEATURES float32 features and a float32 label; workers turn shards into samples,
shuffle them within the shard, and the DataLoader batches them for the model.

Distributed training: pass --rank and --world-size (or set RANK and WORLD_SIZE); each rank
then reads a disjoint share of the shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset
except ImportError:
    sys.exit("this example needs PyTorch: pip install torch (quicstore itself does not)")

from quicstore.client.client import ClientConfig
from quicstore.client.shards import Shard
from quicstore.client.sync import ShardDataset, SyncClient

FEATURES = 16
"""Features per record; a record is FEATURES + 1 float32 values (the last is the label)."""
RECORD_BYTES = (FEATURES + 1) * 4


def decode(shard: Shard) -> torch.Tensor:
    """A shard's records as a (records, FEATURES + 1) float32 tensor (runs in the worker)."""
    if len(shard.data) % RECORD_BYTES:
        raise ValueError(f"{shard.key}: {len(shard.data)} bytes is not whole records")
    return torch.frombuffer(shard.data, dtype=torch.float32).view(-1, FEATURES + 1)


class Samples(IterableDataset[torch.Tensor]):
    """The samples of this worker's shards, shuffled within each shard."""

    def __init__(self, shards: ShardDataset, seed: int) -> None:
        self.shards = shards
        self.seed = seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed + self.shards.epoch)
        for records in self.shards:
            yield from records[torch.randperm(len(records), generator=generator)]


def make_data(client: SyncClient, bucket: str, prefix: str, shards: int, seed: int) -> None:
    """Upload ``shards`` shards of 1000-2000 records of a linearly separable problem."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(FEATURES, generator=generator)
    for index in range(shards):
        count = 1000 + int(torch.randint(0, 1000, (1,), generator=generator))
        features = torch.randn(count, FEATURES, generator=generator)
        labels = (features @ weights > 0).float().unsqueeze(1)
        records = torch.cat([features, labels], dim=1).contiguous()
        client.put(bucket, f"{prefix}{index:05d}.bin", records.numpy().tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="quicstore://HOST:PORT")
    parser.add_argument("bucket")
    parser.add_argument("prefix", help="the shards are every object under this prefix")
    parser.add_argument("--ca", help="CA certificate (PEM) of the gateway")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per batch")
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)))
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    parser.add_argument(
        "--make-data", type=int, metavar="SHARDS", help="first upload a synthetic dataset"
    )
    args = parser.parse_args()
    if args.epochs < 1 or args.workers < 0 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1, --workers at least 0")
    if not 0 <= args.rank < args.world_size:
        parser.error("--rank must be in [0, --world-size)")
    torch.manual_seed(args.seed)
    config = ClientConfig(ca_file=args.ca)
    with SyncClient(args.url, config) as client:
        if args.make_data:
            make_data(client, args.bucket, args.prefix, args.make_data, args.seed)
        objects = client.list_all(args.bucket, prefix=args.prefix)
    if not objects:
        print(f"no shards under {args.bucket}/{args.prefix}", file=sys.stderr)
        return 1
    shards = ShardDataset(
        args.url,
        args.bucket,
        [o.key for o in objects],
        config=config,
        shuffle=True,
        seed=args.seed,
        rank=args.rank,
        world_size=args.world_size,
        transform=decode,
    )
    loader = DataLoader(
        Samples(shards, args.seed), batch_size=args.batch_size, num_workers=args.workers
    )
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    print(f"{len(objects)} shards, {sum(o.size for o in objects)} bytes, {args.workers} workers")
    for epoch in range(args.epochs):
        shards.set_epoch(epoch)  # workers get a copy of the dataset at each epoch's start
        started = time.perf_counter()
        seen = correct = 0
        total_loss = 0.0
        for batch in loader:
            features, labels = batch[:, :FEATURES], batch[:, FEATURES:]
            logits = model(features)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch)
            total_loss += loss.item() * len(batch)
            correct += int(((logits > 0).float() == labels).sum())
        seconds = time.perf_counter() - started
        print(
            f"epoch {epoch}: {seen} samples, loss {total_loss / max(seen, 1):.4f}, "
            f"accuracy {correct / max(seen, 1):.3f}, {seen / seconds:.0f} samples/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
