"""Bench client over the async Azure Blob SDK (``azure.storage.blob.aio``), reading blobs
straight from the storage service (Azurite in tools.bench.azure), no gateway in between.

Spec keys besides the driver's: ``connection_string``; ``container``; ``api_version``;
``max_concurrency`` (parallel range GETs of one download, the SDK's knob); ``get_size``
(bytes of the first GET and of every later chunk: the SDK's ``max_single_get_size`` and
``max_chunk_get_size``; null keeps the SDK's defaults, 32 MiB and 4 MiB). Each request is
``download_blob(offset, length, max_concurrency=...)`` then ``readinto`` a stream that counts
the bytes (and writes them to the sink when the orchestrator checks a sha256). No content
validation (the SDK's default: ``validate_content=False``).

Usage: ``python -m tools.bench.clients.azure_sdk SPEC.json`` (see tools.bench.driver).
"""

from __future__ import annotations

from typing import Any, BinaryIO

from tools.bench.driver import Fetcher, Req, main


class _CountingStream:
    """A seekable writable stream (what ``readinto`` needs for parallel chunks) that counts
    the bytes written and copies them to ``out`` when given."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.count = 0
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise OSError("only absolute seeks")
        self._pos = pos
        if self.out is not None:
            self.out.seek(pos)
        return pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.out is not None:
            self.out.write(data)
        self.count += n
        self._pos += n
        return n

    def flush(self) -> None:
        return None


class AzureSdkFetcher:
    """One BlobServiceClient (one aiohttp connection pool) over one container."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.max_concurrency = int(spec.get("max_concurrency") or 1)
        self.service: Any = None
        self.container: Any = None

    async def connect(self) -> None:
        from azure.storage.blob.aio import BlobServiceClient

        sizes: dict[str, Any] = {}
        if self.spec.get("get_size"):
            size = int(self.spec["get_size"])
            sizes = {"max_single_get_size": size, "max_chunk_get_size": size}
        self.service = BlobServiceClient.from_connection_string(
            self.spec["connection_string"], api_version=self.spec["api_version"], **sizes
        )
        self.container = self.service.get_container_client(self.spec["container"])

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        blob = self.container.get_blob_client(req.path.lstrip("/"))
        offset = length = None
        if req.start is not None:
            assert req.end is not None
            offset, length = req.start, req.end - req.start + 1
        downloader = await blob.download_blob(offset, length, max_concurrency=self.max_concurrency)
        stream = _CountingStream(sink)
        await downloader.readinto(stream)
        return stream.count

    async def close(self) -> None:
        if self.service is not None:
            await self.service.close()


def _make(spec: dict[str, Any]) -> Fetcher:
    return AzureSdkFetcher(spec)


if __name__ == "__main__":
    main(_make)
