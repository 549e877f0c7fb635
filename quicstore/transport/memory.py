"""Process memory behaviour (glibc): buffers that go back to the OS when freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("quicstore.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_libc: ctypes.CDLL | None = None
try:
    _name = ctypes.util.find_library("c")
    if _name:
        _libc = ctypes.CDLL(_name)
        _libc.malloc_trim  # noqa: B018 - glibc only
        _libc.mallopt  # noqa: B018
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _libc = None


def can_trim() -> bool:
    """True where glibc's malloc_trim is available."""
    return _libc is not None


def tune_allocator(
    mmap_threshold: int = 128 * 1024, trim_threshold: int = 64 * 1024 * 1024
) -> bool:
    """Serve allocations of ``mmap_threshold`` bytes and more (read buffers) from their own
    mappings, returned to the OS on free: glibc otherwise raises the threshold after the
    first such free, and large buffers then fragment the heap for good. Keep up to
    ``trim_threshold`` bytes of free heap instead of returning it at every free: packets
    (up to 64 KB each) are allocated and freed by the megabyte per send, and with glibc's
    trimming each burst came back as fresh pages, zeroed by the kernel (a shard epoch of
    400 MiB took 51,000-75,000 page faults, 10-20 % of the gateway's CPU). What is kept is
    given back by :func:`trim`, which the gateway calls once connections end."""
    global _tuned
    if _libc is None:
        return False
    _tuned = True
    ok = bool(_libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    ok = bool(_libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)) and ok
    return ok


_tuned = False

CLIENT_MMAP_THRESHOLD = 1024 * 1024
"""Bytes: allocations below this come from the client's heap (a batch of received
datagrams opens into one buffer and hands its stream data over in one piece, up to about
320 KiB each)."""

CLIENT_TRIM_THRESHOLD = 32 * 1024 * 1024
"""Bytes of free heap a client process keeps for reuse."""


CACHE_LINE = 64
"""Bytes: the alignment of buffers the kernel copies large amounts into."""


def aligned_buffer(size: int, alignment: int = CACHE_LINE) -> memoryview:
    """A zeroed writable buffer of ``size`` bytes whose first byte sits at a multiple of
    ``alignment`` bytes. A bytearray's data starts 16 bytes past a cache line (the
    allocator's chunk header), and the kernel's copy into such a buffer (``preadv`` from
    the page cache, a receive) ran at half the speed of one into an aligned buffer here:
    1.6-1.8 against 3.2-4.5 GB/s for 256 KiB reads from tmpfs."""
    raw = bytearray(size + alignment)
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    skip = -address % alignment
    return memoryview(raw)[skip : skip + size]


def tune_client_allocator() -> bool:
    """For a process that reads through the client SDK (once per process; not when the
    allocator was tuned already, e.g. by a gateway in the same process): receive buffers of
    a few hundred KiB are allocated and freed for every batch of datagrams. glibc serves
    them from fresh mappings (its threshold for that is 128 KiB until a large free raises
    it, and whether one has happened yet depends on what the process did before) or trims
    the heap under them, and either way every batch came back as fresh zeroed pages: about
    50,000 page faults and a third more client CPU per 128 MiB GET. Keeps them on the heap
    (below :data:`CLIENT_MMAP_THRESHOLD`) and up to :data:`CLIENT_TRIM_THRESHOLD` bytes of
    free heap. Returns True if it changed the settings."""
    if _tuned:
        return False
    return tune_allocator(CLIENT_MMAP_THRESHOLD, CLIENT_TRIM_THRESHOLD)


def tune_gc(gen0_threshold: int = 20_000) -> None:
    """For a long-running server: move everything allocated so far (modules, config) out
    of the collector's way and collect the youngest generation less often. The data path
    allocates many short-lived objects (frames, events) that are freed by reference
    counting; a gen-0 pass every 700 of them is pure overhead."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def trim() -> None:
    """Collect unreachable cycles (connection objects refer to each other), then give free
    heap memory back to the OS."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
