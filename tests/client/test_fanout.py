"""The fan-out of one GET into parts (client/fanout.py), over the loopback gateway."""

from __future__ import annotations

import os

import pytest

from quicstore.client import fanout
from quicstore.client.client import Client
from quicstore.plan.prefetch import PrefetchConfig
from quicstore.server.app import RunningGateway

MIB = 1024 * 1024


async def test_the_other_parts_start_when_the_first_response_queues_them(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first response tells the size and queues the other parts; they start then, while
    the first part's data still arrives, not once it has all arrived (nor after a re-plan
    interval, set here far beyond the test)."""
    monkeypatch.setattr(fanout, "REPLAN_INTERVAL", 60.0)
    started_while_first_runs: list[bool] = []
    start_part = fanout.FanoutGet._start_part

    def starting(self, session, part, span):  # type: ignore[no-untyped-def]
        if span is not None:
            started_while_first_runs.append(
                any(p.call is not None and not p.call.done.done() for p in self.outstanding)
            )
        start_part(self, session, part, span)

    monkeypatch.setattr(fanout.FanoutGet, "_start_part", starting)
    prefetch = PrefetchConfig(part_size=8 * MIB, min_parts=4, max_parts=4)
    body = os.urandom(32 * MIB)
    async with Client(gateway.url, ca_file=gateway.tls.cert_file, prefetch=prefetch) as client:
        await client.put("data", "parts", body)
        assert await client.get("data", "parts") == body
    assert len(started_while_first_runs) == 3
    assert started_while_first_runs[0]  # the first of the others, at least, overlapped
