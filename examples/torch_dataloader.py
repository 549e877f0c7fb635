"""A PyTorch training-loop data pipeline over quicstore (torch optional for quicstore itself).

    python examples/torch_dataloader.py quicstore://127.0.0.1:4433 datasets train/ --ca CERT

ShardDataset is an iterable dataset: DataLoader workers each read their own partition of the
epoch's shuffled shard sequence (so every shard is read once per epoch across workers and
ranks), with shards prefetched in the background.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from quicstore.client.client import ClientConfig
from quicstore.client.shards import Shard
from quicstore.client.sync import ShardDataset, SyncClient


def to_tensor(shard: Shard) -> torch.Tensor:
    """Decode a shard (here: raw bytes as uint8)."""
    return torch.frombuffer(bytearray(shard.data), dtype=torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("bucket")
    parser.add_argument("prefix")
    parser.add_argument("--ca")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = ClientConfig(ca_file=args.ca)
    with SyncClient(args.url, config) as client:
        keys = [o.key for o in client.list_all(args.bucket, prefix=args.prefix)]
    dataset = ShardDataset(args.url, args.bucket, keys, config=config, shuffle=True, seed=0,
                           transform=to_tensor)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.workers)
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        total = 0
        for tensor in loader:
            total += tensor.numel()
        print(f"epoch {epoch}: {total} bytes")


if __name__ == "__main__":
    main()
