"""quicstore.fsspec: the quicstore:// file system against a real in-process gateway, through
fsspec's own API, pandas and pyarrow.

fsspec's blocking API runs on its own loop thread while the gateway runs on the test's loop,
so blocking calls go through ``asyncio.to_thread`` (as the sync client's tests do).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec", reason="the fsspec extra is not installed")

import quicstore  # noqa: E402
from quicstore.fsspec import QuicstoreFileSystem  # noqa: E402
from quicstore.server.app import RunningGateway, start_gateway  # noqa: E402
from quicstore.server.config import GatewayConfig  # noqa: E402

MIB = 1024 * 1024


def options(gateway: RunningGateway) -> dict[str, Any]:
    return {"ca_file": str(gateway.tls.cert_file)}


@pytest.fixture
async def fs(gateway: RunningGateway) -> AsyncIterator[QuicstoreFileSystem]:
    """A blocking file system on the gateway (not cached: each test its own)."""
    filesystem = fsspec.filesystem(
        "quicstore", url=gateway.url, skip_instance_cache=True, **options(gateway)
    )
    yield filesystem
    await asyncio.to_thread(filesystem.close)


def test_registered_and_urls_parsed() -> None:
    assert fsspec.get_filesystem_class("quicstore") is QuicstoreFileSystem
    fs, path = fsspec.core.url_to_fs(
        "quicstore://127.0.0.1:1,localhost:2/bucket/dir/key.bin",
        insecure=True,
        skip_instance_cache=True,
    )
    assert isinstance(fs, QuicstoreFileSystem)
    assert path == "bucket/dir/key.bin"
    endpoints = [(e.host, e.port) for e in fs.client.endpoints]
    assert endpoints == [("127.0.0.1", 1), ("localhost", 2)]
    assert fs.unstrip_protocol(path) == "quicstore://127.0.0.1:1,localhost:2/bucket/dir/key.bin"
    # IPv6 gateways go in the url option ("::" in a URL means chaining to fsspec).
    v6 = QuicstoreFileSystem(["quicstore://[::1]:2"], insecure=True, skip_instance_cache=True)
    assert v6.unstrip_protocol("b/k") == "quicstore://[::1]:2/b/k"
    assert fs._strip_protocol("quicstore://h:1/b/k/") == "b/k"
    assert fs._strip_protocol("b/k") == "b/k"


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="unknown quicstore storage option"):
        QuicstoreFileSystem("quicstore://127.0.0.1:1", ca_fil="x", skip_instance_cache=True)
    with pytest.raises(ValueError, match="no quicstore gateway"):
        QuicstoreFileSystem(skip_instance_cache=True)
    with pytest.raises(ValueError, match="not a quicstore"):
        QuicstoreFileSystem("https://h:1", skip_instance_cache=True)
    with pytest.raises(ValueError, match="block_size"):
        QuicstoreFileSystem("quicstore://127.0.0.1:1", block_size=0, skip_instance_cache=True)


async def test_open_write_stream_and_read_back(
    gateway: RunningGateway, fs: QuicstoreFileSystem
) -> None:
    body = os.urandom(3 * MIB + 12345)
    url = f"{gateway.url}/data/dir/big.bin"

    def work() -> None:
        # 1 MiB blocks: the write streams into one PUT while the file is still open.
        with fsspec.open(url, "wb", block_size=MIB, **options(gateway)) as f:
            for pos in range(0, len(body), 100_000):
                f.write(body[pos : pos + 100_000])
            assert f._task is not None  # streaming into the PUT already
        info = fs.info("data/dir/big.bin")
        assert info["type"] == "file" and info["size"] == len(body)
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
        with fsspec.open(url, "rb", block_size=MIB, **options(gateway)) as f:
            assert f.read(10) == body[:10]
            f.seek(2 * MIB + 7)
            assert f.read(MIB) == body[2 * MIB + 7 : 3 * MIB + 7]
            f.seek(-5, 2)
            assert f.read() == body[-5:]
        assert fs.cat_file("data/dir/big.bin") == body
        assert fs.cat_file("data/dir/big.bin", start=MIB, end=MIB + 100) == body[MIB : MIB + 100]
        assert fs.cat_file("data/dir/big.bin", start=-100) == body[-100:]
        assert fs.cat_file("data/dir/big.bin", start=10, end=-10) == body[10:-10]
        assert fs.cat_file("data/dir/big.bin", start=len(body)) == b""
        assert fs.cat_file("data/dir/big.bin", start=50, end=50) == b""
        ranges = fs.cat_ranges(
            ["data/dir/big.bin"] * 3, [0, 65536, len(body) - 3], [100, 200_000, len(body)]
        )
        assert ranges == [body[0:100], body[65536:200_000], body[-3:]]

    await asyncio.to_thread(work)


async def test_listing_find_info_rm(fs: QuicstoreFileSystem) -> None:
    def work() -> None:
        fs.pipe(
            {
                "data/t/a.txt": b"a",
                "data/t/b.txt": b"bb",
                "data/t/sub/c.txt": b"ccc",
                "data/t/sub/deeper/d.txt": b"dddd",
                "data/other.txt": b"o",
            }
        )
        listing = fs.ls("data/t", detail=True)
        assert [(e["name"], e["type"]) for e in listing] == [
            ("data/t/a.txt", "file"),
            ("data/t/b.txt", "file"),
            ("data/t/sub", "directory"),
        ]
        assert [e["size"] for e in listing] == [1, 2, 0]
        assert fs.ls("data/t/a.txt", detail=False) == ["data/t/a.txt"]
        assert fs.find("data/t") == [
            "data/t/a.txt",
            "data/t/b.txt",
            "data/t/sub/c.txt",
            "data/t/sub/deeper/d.txt",
        ]
        assert fs.find("data/t", maxdepth=1) == ["data/t/a.txt", "data/t/b.txt"]
        assert fs.find("data/t/a.txt") == ["data/t/a.txt"]
        assert fs.find("data/none") == []
        assert fs.info("data/t/sub")["type"] == "directory"
        assert fs.info("data")["type"] == "directory"
        assert fs.isdir("data/t") and fs.isfile("data/t/a.txt") and not fs.exists("data/nope")
        assert fs.du("data/t") == 10
        assert fs.glob("data/t/*.txt") == ["data/t/a.txt", "data/t/b.txt"]
        with pytest.raises(FileNotFoundError):
            fs.info("data/t/missing")
        with pytest.raises(FileNotFoundError):
            fs.ls("data/missing")
        with pytest.raises(FileNotFoundError):
            fs.cat_file("data/t/missing")
        with pytest.raises(ValueError, match="bucket listing"):
            fs.ls("")
        fs.rm("data/t/a.txt")
        assert not fs.exists("data/t/a.txt")
        with pytest.raises(FileNotFoundError):
            fs.rm("data/t/a.txt")
        with pytest.raises(IsADirectoryError):
            fs.rm("data/t/sub")
        fs.rm("data/t/sub", recursive=True)
        assert fs.find("data/t") == ["data/t/b.txt"]
        fs.mv("data/t/b.txt", "data/t/moved.txt")
        assert fs.cat_file("data/t/moved.txt") == b"bb" and not fs.exists("data/t/b.txt")

    await asyncio.to_thread(work)


async def test_put_and_get_files(fs: QuicstoreFileSystem, tmp_path: Path) -> None:
    local = tmp_path / "up"
    (local / "nested").mkdir(parents=True)
    (local / "one.bin").write_bytes(os.urandom(300_000))
    (local / "nested" / "two.bin").write_bytes(os.urandom(1000))

    def work() -> None:
        fs.put(str(local), "data/up", recursive=True)
        assert fs.find("data/up") == ["data/up/nested/two.bin", "data/up/one.bin"]
        down = tmp_path / "down"
        fs.get("data/up", str(down), recursive=True)
        assert (down / "one.bin").read_bytes() == (local / "one.bin").read_bytes()
        assert (down / "nested" / "two.bin").read_bytes() == (local / "nested/two.bin").read_bytes()

    await asyncio.to_thread(work)


async def test_a_failed_write_publishes_nothing(
    fs: QuicstoreFileSystem, gateway: RunningGateway
) -> None:
    def work() -> None:
        for size in (100, 3 * MIB):  # one-shot PUT and streamed PUT
            with (
                pytest.raises(RuntimeError, match="stop"),
                fs.open(f"data/broken-{size}", "wb", block_size=MIB) as f,
            ):
                f.write(os.urandom(size))
                assert (f._task is not None) == (size > MIB)
                raise RuntimeError("stop")
            assert not fs.exists(f"data/broken-{size}")
        fs.pipe_file("data/once", b"first")
        with pytest.raises(FileExistsError):
            fs.pipe_file("data/once", b"second", mode="create")
        with (
            pytest.raises(FileExistsError),
            fs.open("data/once", "xb", block_size=MIB) as f,
        ):
            f.write(os.urandom(2 * MIB + 1))  # streamed: refused at commit
        with fs.open("data/new", "xb") as f:
            f.write(b"created")
        assert fs.cat_file("data/once") == b"first" and fs.cat_file("data/new") == b"created"
        with pytest.raises(NotImplementedError, match="ab"):
            fs.open("data/once", "ab")
        with pytest.raises(IsADirectoryError):
            fs.open("data", "rb")

    await asyncio.to_thread(work)


async def test_reads_are_verified_and_pinned_to_the_version_opened(
    fs: QuicstoreFileSystem, gateway: RunningGateway
) -> None:
    body = os.urandom(300_000)

    def work() -> None:
        fs.pipe_file("data/victim", body)
        (data_file,) = (gateway.gateway.config.root / "store" / "data").rglob("*.obj")
        with data_file.open("r+b") as f:  # flip one bit in block 2 (bytes 131072-196607)
            f.seek(150_000)
            byte = f.read(1)
            f.seek(150_000)
            f.write(bytes([byte[0] ^ 0x10]))
        with pytest.raises(quicstore.IntegrityError):
            fs.cat_file("data/victim")
        assert fs.cat_file("data/victim", start=0, end=131072) == body[:131072]
        # A file reads the version it opened: a replacement fails the read, never mixes.
        fs.pipe_file("data/moving", body)
        with fs.open("data/moving", "rb", block_size=65536, cache_type="none") as f:
            assert f.read(1000) == body[:1000]
            fs.pipe_file("data/moving", b"replaced")
            with pytest.raises(quicstore.PreconditionFailed):
                f.read(1000)

    await asyncio.to_thread(work)


async def test_pandas_and_pyarrow(gateway: RunningGateway, fs: QuicstoreFileSystem) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    opts = options(gateway)
    base = f"{gateway.url}/data/tables"

    def work() -> None:
        df = pd.DataFrame({"id": range(5000), "name": [f"row {i}" for i in range(5000)]})
        df.to_csv(f"{base}/t.csv", index=False, storage_options=opts)
        assert pd.read_csv(f"{base}/t.csv", storage_options=opts).equals(df)
        df.to_parquet(f"{base}/t.parquet", storage_options=opts)
        assert pd.read_parquet(f"{base}/t.parquet", storage_options=opts).equals(df)
        # pyarrow's reader on the file system (ranged reads of the footer and row groups).
        table = pq.read_table("data/tables/t.parquet", filesystem=fs)
        assert table.num_rows == 5000 and table.column("name")[4999].as_py() == "row 4999"
        # A directory of Parquet files as one dataset (listing through the file system).
        for part in range(3):
            chunk = df.iloc[part * 100 : (part + 1) * 100]
            chunk.to_parquet(f"{base}/parts/p{part}.parquet", storage_options=opts)
        dataset = pq.read_table("data/tables/parts", filesystem=fs)
        assert sorted(dataset.column("id").to_pylist()) == list(range(300))

    await asyncio.to_thread(work)


async def test_asynchronous_mode(gateway: RunningGateway) -> None:
    fs = QuicstoreFileSystem(
        gateway.url, asynchronous=True, skip_instance_cache=True, **options(gateway)
    )
    try:
        await fs._pipe_file("data/async.bin", b"x" * 100_000)
        assert await fs._cat_file("data/async.bin", start=10, end=20) == b"x" * 10
        assert (await fs._info("data/async.bin"))["size"] == 100_000
        assert await fs._find("data") == ["data/async.bin"]
        with pytest.raises(RuntimeError, match="asynchronous"):
            fs.close()
    finally:
        await fs._close()


async def test_permission_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUICSTORE_TOKEN", raising=False)
    running = await start_gateway(GatewayConfig(root=tmp_path / "locked", port=0))
    fs = QuicstoreFileSystem(
        running.url,
        asynchronous=True,
        skip_instance_cache=True,
        ca_file=str(running.tls.cert_file),
    )
    try:
        with pytest.raises(PermissionError):
            await fs._cat_file("data/x")
        with pytest.raises(PermissionError):
            await fs._pipe_file("data/x", b"no")
        with pytest.raises(PermissionError):
            await fs._ls("data")
    finally:
        await fs._close()
        await running.stop(drain_timeout=1)
