"""quicstore's UDP transport: batched sends (GSO) and receives (GRO) with fallbacks."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from quicstore.transport.batched import BATCH_BYTES, BatchedDatagramTransport
from quicstore.transport.endpoint import bind_udp


class Collector(asyncio.DatagramProtocol):
    def __init__(self, expected: int) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))
        if len(self.datagrams) >= self.expected and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        if not self.done.done():
            self.done.set_result(None)


def bound() -> socket.socket:
    return bind_udp("127.0.0.1", 0)  # 4 MiB kernel buffers: a burst is not dropped


@pytest.mark.parametrize("offloads", [True, False])
async def test_a_burst_arrives_whole_and_in_order(offloads: bool) -> None:
    loop = asyncio.get_running_loop()
    burst = [bytes([i]) * 1200 for i in range(150)] + [b"last" * 50]
    receiver_protocol = Collector(len(burst))
    receiver = BatchedDatagramTransport(
        loop, bound(), receiver_protocol, gso=offloads, gro=offloads
    )
    sender = BatchedDatagramTransport(loop, bound(), Collector(0), gso=offloads, gro=offloads)
    try:
        sender.send_batch(burst, receiver.get_extra_info("sockname"))
        await asyncio.wait_for(receiver_protocol.done, 10)
        assert [d for d, _ in receiver_protocol.datagrams] == burst
        assert {a for _, a in receiver_protocol.datagrams} == {sender.get_extra_info("sockname")}
        if offloads and sender.gso:
            assert sender.send_calls < len(burst) / 10  # 54 datagrams per call at most
        else:
            assert sender.send_calls == len(burst)
        if offloads and receiver.gro:
            assert receiver.receive_calls < len(burst)
    finally:
        sender.close()
        receiver.close()


class BatchCollector(Collector):
    """A protocol that takes datagrams in batches (``datagrams_received``)."""

    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self.batches: list[list[tuple[bytes, Any]]] = []

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        self.batches.append([(data, addr) for data in datagrams])
        for data in datagrams:
            self.datagram_received(data, addr)


async def test_coalesced_receives_reach_a_batch_protocol_as_one_list() -> None:
    loop = asyncio.get_running_loop()
    burst = [bytes([i]) * 1200 for i in range(150)] + [b"last" * 50]
    receiver_protocol = BatchCollector(len(burst))
    receiver = BatchedDatagramTransport(loop, bound(), receiver_protocol)
    sender = BatchedDatagramTransport(loop, bound(), Collector(0))
    try:
        if not (receiver.gro and sender.gso):
            pytest.skip("the kernel offers no GSO/GRO here")
        sender.send_batch(burst, receiver.get_extra_info("sockname"))
        await asyncio.wait_for(receiver_protocol.done, 10)
        assert [d for d, _ in receiver_protocol.datagrams] == burst
        # Nothing went one by one, and coalesced receives were taken apart into batches.
        assert sum(map(len, receiver_protocol.batches)) == len(burst)
        assert receiver.receive_calls < len(burst)
        assert max(map(len, receiver_protocol.batches)) > 1
    finally:
        sender.close()
        receiver.close()


async def test_separate_datagrams_waiting_together_are_one_batch_within_its_bound() -> None:
    """64 KB datagrams are never coalesced by GRO: those waiting in the socket when it is
    read still reach the protocol together, up to BATCH_BYTES, in order."""
    loop = asyncio.get_running_loop()
    receiver_sock = bound()
    sender = bound()
    datagrams = [bytes([i]) * 60_000 for i in range(6)]
    for datagram in datagrams:  # all queued before the receiver is first read
        sender.sendto(datagram, receiver_sock.getsockname())
    receiver_protocol = BatchCollector(len(datagrams))
    receiver = BatchedDatagramTransport(loop, receiver_sock, receiver_protocol)
    try:
        await asyncio.wait_for(receiver_protocol.done, 10)
        assert [d for d, _ in receiver_protocol.datagrams] == datagrams
        # 5 x 60,000 bytes reach BATCH_BYTES (262,144): a batch ends with the fifth.
        assert BATCH_BYTES == 256 * 1024
        assert [len(batch) for batch in receiver_protocol.batches] == [5, 1]
    finally:
        sender.close()
        receiver.close()


async def test_a_batch_never_mixes_addresses_and_order_is_kept() -> None:
    loop = asyncio.get_running_loop()
    receiver_sock = bound()
    first, second = bound(), bound()
    sent = []
    for i in range(9):
        sock = first if i in (0, 1, 2, 5, 8) else second
        datagram = bytes([i]) * 3000
        sock.sendto(datagram, receiver_sock.getsockname())
        sent.append((datagram, sock.getsockname()))
    receiver_protocol = BatchCollector(len(sent))
    receiver = BatchedDatagramTransport(loop, receiver_sock, receiver_protocol, gro=False)
    try:
        await asyncio.wait_for(receiver_protocol.done, 10)
        assert receiver_protocol.datagrams == sent
        assert [len(batch) for batch in receiver_protocol.batches] == [3, 2, 1, 2, 1]
        for batch in receiver_protocol.batches:
            assert len({addr for _, addr in batch}) == 1
    finally:
        first.close()
        second.close()
        receiver.close()


async def test_connected_socket_reports_a_closed_port_as_an_error() -> None:
    loop = asyncio.get_running_loop()
    nobody = bound()
    address = nobody.getsockname()
    nobody.close()
    sock = bound()
    sock.connect(address)
    protocol = Collector(1)
    transport = BatchedDatagramTransport(loop, sock, protocol)
    try:
        transport.sendto(b"hello")
        await asyncio.wait_for(protocol.done, 10)
        assert protocol.errors and isinstance(protocol.errors[0], ConnectionRefusedError)
    finally:
        transport.close()


async def test_sends_that_would_block_are_queued_and_flushed_in_order() -> None:
    loop = asyncio.get_running_loop()
    receiver_sock = bound()
    sock = bound()
    transport = BatchedDatagramTransport(loop, sock, Collector(0), gso=False, gro=False)
    real_send = sock.sendto
    blocked = {"left": 3}

    class Flaky:
        """The socket refuses three sends (EAGAIN), then takes them."""

        def __getattr__(self, name: str) -> Any:
            return getattr(sock, name)

        def sendto(self, data: bytes, addr: Any) -> int:
            if blocked["left"]:
                blocked["left"] -= 1
                raise BlockingIOError
            return real_send(data, addr)

    transport._sock = Flaky()  # type: ignore[assignment]
    receiver_protocol = Collector(20)
    receiver = BatchedDatagramTransport(loop, receiver_sock, receiver_protocol)
    try:
        datagrams = [bytes([i]) * 100 for i in range(20)]
        for datagram in datagrams:
            transport.sendto(datagram, receiver.get_extra_info("sockname"))
        assert transport.get_write_buffer_size() > 0
        await asyncio.wait_for(receiver_protocol.done, 10)
        assert [d for d, _ in receiver_protocol.datagrams] == datagrams
        assert transport.get_write_buffer_size() == 0
    finally:
        transport.close()
        receiver.close()
