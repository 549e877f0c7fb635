"""Stateful fuzzing of a live gateway: hostile connections send random frame sequences,
random bytes, truncated frames, wrong frame types, huge lengths and resets, while a
well-behaved client on its own connection must keep being served after every step."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
from aioquic.quic.configuration import QuicConfiguration
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quicstore.client.client import Client
from quicstore.proto.codes import ALPN, FrameType
from quicstore.proto.frames import encode_frame, encode_frame_header
from quicstore.proto.varint import encode_varint
from quicstore.server.app import RunningGateway, start_gateway
from quicstore.server.config import GatewayConfig
from quicstore.transport.endpoint import QuicDriver, connect_quic

from ..strategies import frames

T = TypeVar("T")
EXAMPLES = int(os.environ.get("QUICSTORE_STATEFUL_EXAMPLES", "60"))


class LoopThread:
    """An event loop in a thread, so Hypothesis (synchronous) can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Hostile:
    """A raw QUIC connection that speaks quicstore/1 badly on purpose."""

    def __init__(self, driver: QuicDriver, transport: asyncio.DatagramTransport) -> None:
        self.driver = driver
        self.transport = transport
        self.streams: list[int] = []

    def quic_event_received(self, event: object) -> None:
        pass


class GatewayFuzz(RuleBasedStateMachine):
    """Rules act on hostile connections; the invariant checks the good client."""

    loop: LoopThread
    gateway: RunningGateway
    good: Client

    def __init__(self) -> None:
        super().__init__()
        self.hostiles: list[Hostile] = []

    async def _connect(self) -> Hostile:
        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost")
        config.load_verify_locations(cafile=str(self.gateway.tls.cert_file))
        holder: list[Hostile] = []

        def make(driver: QuicDriver) -> Any:
            return type("H", (), {"quic_event_received": lambda self, e: None})()

        driver, transport = await connect_quic(self.gateway.host, self.gateway.port, config, make)
        holder.append(Hostile(driver, transport))
        return holder[0]

    @precondition(lambda self: len(self.hostiles) < 3)
    @rule()
    def open_connection(self) -> None:
        self.hostiles.append(self.loop.run(self._connect()))

    def _send(self, index: int, stream: int | None, data: bytes, fin: bool) -> None:
        if not self.hostiles:
            return
        hostile = self.hostiles[index % len(self.hostiles)]

        async def send() -> None:
            quic = hostile.driver.quic
            if hostile.driver.closed.done():
                return
            sid = stream
            if sid is None or sid not in hostile.streams:
                sid = quic.get_next_available_stream_id()
                hostile.streams.append(sid)
            try:
                quic.send_stream_data(sid, data, end_stream=fin)
            except (ValueError, RuntimeError):
                return  # our own stream already finished or reset: not the gateway's doing
            hostile.driver.transmit()

        self.loop.run(send())

    @rule(
        index=st.integers(0, 5),
        data=st.binary(max_size=300),
        fin=st.booleans(),
        reuse=st.booleans(),
    )
    def random_bytes(self, index: int, data: bytes, fin: bool, reuse: bool) -> None:
        stream = self._pick(index) if reuse else None
        self._send(index, stream, data, fin)

    @rule(
        index=st.integers(0, 5),
        frame_list=st.lists(frames, max_size=4),
        cut=st.integers(0, 50),
        fin=st.booleans(),
    )
    def frame_sequence(self, index: int, frame_list: list[Any], cut: int, fin: bool) -> None:
        wire = b"".join(encode_frame(f) for f in frame_list)
        if cut and wire:
            wire = wire[: max(1, len(wire) - cut)]  # truncated
        self._send(index, None, wire, fin)

    @rule(
        index=st.integers(0, 5),
        frame_type=st.sampled_from([*[int(t) for t in FrameType], 0x21, 0x3FFF]),
        length=st.sampled_from([2**14, 2**30, 2**62 - 1]),
        fin=st.booleans(),
    )
    def huge_length(self, index: int, frame_type: int, length: int, fin: bool) -> None:
        self._send(index, None, encode_frame_header(frame_type, length) + b"x" * 10, fin)

    @rule(index=st.integers(0, 5), data=st.binary(max_size=100))
    def unidirectional_stream(self, index: int, data: bytes) -> None:
        if not self.hostiles:
            return
        hostile = self.hostiles[index % len(self.hostiles)]

        async def send() -> None:
            if hostile.driver.closed.done():
                return
            quic = hostile.driver.quic
            sid = quic.get_next_available_stream_id(is_unidirectional=True)
            quic.send_stream_data(sid, encode_varint(0x00) + data)
            hostile.driver.transmit()

        self.loop.run(send())

    @rule(index=st.integers(0, 5))
    def reset_a_stream(self, index: int) -> None:
        stream = self._pick(index)
        if stream is None:
            return
        hostile = self.hostiles[index % len(self.hostiles)]

        async def reset() -> None:
            if not hostile.driver.closed.done():
                hostile.driver.quic.reset_stream(stream, 0x510C)
                hostile.driver.transmit()

        self.loop.run(reset())

    def _pick(self, index: int) -> int | None:
        if not self.hostiles:
            return None
        streams = self.hostiles[index % len(self.hostiles)].streams
        return streams[index % len(streams)] if streams else None

    @invariant()
    def well_behaved_client_is_served(self) -> None:
        assert self.loop.run(self.good.get("data", "probe")) == b"still here"

    def teardown(self) -> None:
        for hostile in self.hostiles:

            async def close(h: Hostile = hostile) -> None:
                h.driver.close()
                h.transport.close()

            self.loop.run(close())


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    loop = LoopThread()
    root = tmp_path_factory.mktemp("fuzz")
    gateway = loop.run(
        start_gateway(
            GatewayConfig(root=root / "gw", port=0, open_access=True, retry_threshold=None)
        )
    )
    good = Client(gateway.url, ca_file=gateway.tls.cert_file)
    loop.run(good.put("data", "probe", b"still here"))
    yield loop, gateway, good
    loop.run(good.close())
    loop.run(gateway.stop(drain_timeout=1))
    loop.stop()


def test_gateway_survives_hostile_connections(live_gateway: Any) -> None:
    GatewayFuzz.loop, GatewayFuzz.gateway, GatewayFuzz.good = live_gateway
    run_state_machine_as_test(
        GatewayFuzz,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    gw = GatewayFuzz.gateway.gateway
    violations = {
        k: v for k, v in gw.metrics.errors.items() if k.startswith(("stream ", "connection "))
    }
    print("protocol violations answered:", violations)
    assert sum(violations.values()) >= 5, violations  # the hostile input reached the gateway
