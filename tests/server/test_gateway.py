"""Unit tests of the gateway's own parts (the loopback tests are in tests/e2e)."""

from __future__ import annotations

import asyncio

from quicstore.server.gateway import BufferPool


async def test_pool_bounds_buffers_and_hands_them_to_waiters() -> None:
    pool = BufferPool(size=16, count=2)
    first, second = await pool.acquire(), await pool.acquire()
    assert pool.in_use == 2 and len(first) == 16
    waiting = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    pool.release(first)
    assert await waiting is first
    pool.release(second)
    pool.release(first)
    assert pool.in_use == 0


async def test_a_waiter_cancelled_after_its_grant_passes_the_buffer_on() -> None:
    """A buffer granted to a waiter whose task is cancelled before it runs (a connection
    dropped in the same loop pass) goes to the next waiter or back to the pool, never lost:
    lost buffers stayed counted and, after enough of them, every GET waited forever."""
    pool = BufferPool(size=16, count=1)
    held = await pool.acquire()
    doomed = asyncio.ensure_future(pool.acquire())
    patient = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    pool.release(held)  # granted to ``doomed``...
    doomed.cancel()  # ...which is cancelled before it resumes
    assert await asyncio.wait_for(patient, 2) is held
    assert doomed.cancelled()
    pool.release(held)
    assert pool.in_use == 0
    assert await asyncio.wait_for(pool.acquire(), 1) is held


async def test_hand_off_makes_room_and_gives_back_only_within_the_count() -> None:
    """A buffer handed to QUIC leaves the pool's count at once (a new one may be made);
    when QUIC gives it back it returns only if the pool is short."""
    pool = BufferPool(size=16, count=1)
    sent = await pool.acquire()
    give_back = pool.hand_off(sent)
    fresh = await asyncio.wait_for(pool.acquire(), 1)
    assert fresh is not sent and pool.in_use == 1
    give_back()  # the pool is full: the handed-off buffer is dropped
    assert pool.in_use == 1
    pool.release(fresh)
    assert pool.in_use == 0


async def test_shrink_frees_idle_buffers_beyond_keep_and_leaves_used_ones() -> None:
    """After a storm the pool gives back what it grew to (the gateway calls this a little
    after connections end), keeping ``keep`` idle buffers; buffers in use stay counted."""
    pool = BufferPool(size=16, count=8)
    buffers = [await pool.acquire() for _ in range(6)]
    for buffer in buffers[:5]:
        pool.release(buffer)
    assert pool.shrink(2) == 3
    assert pool._allocated == 3 and pool.in_use == 1 and len(pool._free) == 2
    assert pool.shrink(2) == 0
    # The freed room is usable again: up to the count, without waiting.
    more = [await asyncio.wait_for(pool.acquire(), 1) for _ in range(7)]
    assert pool.in_use == 8 and len({id(b) for b in more}) == 7
