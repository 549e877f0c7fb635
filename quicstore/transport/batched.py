"""A UDP transport that quicstore owns: batched receives and sends on a non-blocking socket.

asyncio's (and uvloop's) datagram transports make one system call per datagram in each
direction. This one drains the socket in one readiness callback, asks the kernel for
coalesced receives (UDP_GRO: many datagrams of a flow in one call, split here), and sends
the datagrams of one transmit in as few calls as the kernel allows (UDP_SEGMENT / GSO:
up to 64 equal-sized datagrams per call, straight from the list of packets, no joining).
Where the kernel lacks either offload, or a GSO send fails, it falls back to one call per
datagram. Sends that would block are queued and flushed when the socket is writable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from collections import deque
from typing import Any

from .memory import aligned_buffer
from .udp import (
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    enable_gro,
    gso_batches,
    gso_supported,
    split_coalesced,
)

log = logging.getLogger("quicstore.transport")

NetworkAddress = Any

RECEIVE_BUFFER = 65536
"""Bytes one receive can return (a coalesced GRO receive is at most one IP datagram)."""
READS_PER_WAKEUP = 64
"""Receives per readiness callback before yielding to other work (bounded fairness)."""
BATCH_BYTES = 256 * 1024
"""Bytes of datagrams from one address handed to the protocol at once, at most (plus one
receive): bounds the memory and the delay before the first of them is processed."""
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)


class BatchedDatagramTransport(asyncio.DatagramTransport):
    """A datagram transport over ``sock`` (bound, non-blocking is set here) delivering to
    ``protocol`` (an ``asyncio.DatagramProtocol``). ``gso``/``gro``: use the offloads if
    the kernel has them. Use :meth:`send_batch` to send several datagrams at once."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        *,
        gso: bool = True,
        gro: bool = True,
    ) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._fd = sock.fileno()
        self._deliver_batch = getattr(protocol, "datagrams_received", None)
        """``protocol.datagrams_received(datagrams, addr)`` if it has one: the datagrams of
        one coalesced receive handed over together."""
        self.gso = gso and gso_supported(sock)
        """True while sends use UDP_SEGMENT."""
        self.gro = gro and enable_gro(sock)
        """True if receives may be coalesced."""
        self._view = aligned_buffer(RECEIVE_BUFFER)  # the kernel's copy is faster aligned
        self._pending: deque[tuple[list[bytes], int, NetworkAddress]] = deque()
        self._writing = False
        self._closing = False
        self._peer = self._peername()
        self.receive_calls = 0
        """System calls that returned data (a coalesced receive counts once)."""
        self.send_calls = 0
        """System calls that sent data (a GSO send counts once)."""
        self._extra = {"socket": sock, "sockname": sock.getsockname(), "peername": self._peer}
        loop.add_reader(self._fd, self._read_ready)
        protocol.connection_made(self)

    def _peername(self) -> NetworkAddress | None:
        try:
            return self._sock.getpeername()
        except OSError:
            return None

    # -- asyncio.BaseTransport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._pending.clear()
        self._loop.call_soon(self._finish_close)

    def abort(self) -> None:
        self.close()

    def _finish_close(self) -> None:
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()

    def get_write_buffer_size(self) -> int:
        return sum(len(d) for batch, _, _ in self._pending for d in batch)

    # -- receiving

    def _receive(self) -> tuple[int, int, NetworkAddress] | None:
        """One receive into the buffer: (bytes, GRO segment size or 0, sender), or None when
        the socket has nothing waiting; other OSErrors are raised."""
        try:
            if self.gro:
                size, ancillary, _, addr = self._sock.recvmsg_into([self._view], _GRO_CMSG_SPACE)
            else:
                size, addr = self._sock.recvfrom_into(self._view)
                ancillary = []
        except (BlockingIOError, InterruptedError):
            return None
        self.receive_calls += 1
        segment = 0
        for level, kind, data in ancillary:
            if level == SOL_UDP and kind == UDP_GRO:
                segment = int.from_bytes(data[:4], sys.byteorder)
        return size, segment, self._peer if addr is None else addr

    def _read_ready(self) -> None:
        view, protocol, deliver = self._view, self._protocol, self._deliver_batch
        # Datagrams of consecutive receives from one address go to the protocol together
        # (a 64 KB datagram is never coalesced by GRO, yet a burst of them is waiting by
        # the time the first is read): the connection's per-batch work (opening, events,
        # the send that follows) is then done once per wakeup, not once per datagram.
        # A protocol without ``datagrams_received`` gets them one by one.
        batch: list[bytes] = []
        batch_addr: NetworkAddress = None
        batch_bytes = 0
        for _ in range(READS_PER_WAKEUP):
            if self._closing:
                return
            try:
                received = self._receive()
            except OSError as exc:
                if batch and deliver is not None:
                    deliver(batch, batch_addr)
                    batch, batch_bytes = [], 0
                protocol.error_received(exc)
                continue
            if received is None:
                break
            size, segment, addr = received
            if deliver is None:
                if segment and size > segment:
                    for datagram in split_coalesced(view[:size], segment):
                        protocol.datagram_received(datagram, addr)
                else:
                    protocol.datagram_received(bytes(view[:size]), addr)
                continue
            if batch and addr != batch_addr:
                deliver(batch, batch_addr)
                batch, batch_bytes = [], 0
            batch_addr = addr
            if segment and size > segment:
                batch.extend(split_coalesced(view[:size], segment))
            else:
                batch.append(bytes(view[:size]))
            batch_bytes += size
            if batch_bytes >= BATCH_BYTES:
                deliver(batch, addr)
                batch, batch_bytes = [], 0
        if batch and deliver is not None and not self._closing:
            deliver(batch, batch_addr)

    # -- sending

    def sendto(self, data: Any, addr: NetworkAddress = None) -> None:
        """Send one datagram (to the connected peer if ``addr`` is None)."""
        self.send_batch([bytes(data) if not isinstance(data, bytes) else data], addr)

    def send_batch(self, datagrams: list[bytes], addr: NetworkAddress = None) -> None:
        """Send datagrams in order, to ``addr`` (None: the connected peer)."""
        if self._closing or not datagrams:
            return
        if self._peer is not None:
            addr = None
        batches = gso_batches(datagrams) if self.gso else [([d], len(d)) for d in datagrams]
        if self._pending:
            self._pending.extend((batch, size, addr) for batch, size in batches)
            return
        for index, (batch, size) in enumerate(batches):
            if not self._send_one(batch, size, addr):
                self._pending.extend((b, s, addr) for b, s in batches[index:])
                self._loop.add_writer(self._fd, self._write_ready)
                self._writing = True
                return

    def _send_one(self, batch: list[bytes], size: int, addr: NetworkAddress) -> bool:
        """One system call; False if it would block (nothing was sent)."""
        sock = self._sock
        try:
            if len(batch) > 1:
                options = [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))]
                if addr is None:
                    sock.sendmsg(batch, options)
                else:
                    sock.sendmsg(batch, options, 0, addr)
            elif addr is None:
                sock.send(batch[0])
            else:
                sock.sendto(batch[0], addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if len(batch) > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                # The path cannot segment (no checksum offload, or a kernel limit): stop
                # using GSO and send these one by one.
                log.info("UDP GSO send failed (%s): sending datagrams one by one", exc)
                self.gso = False
                for datagram in batch:
                    self._send_one([datagram], len(datagram), addr)
                return True
            self._protocol.error_received(exc)
            return True
        self.send_calls += 1
        return True

    def _write_ready(self) -> None:
        while self._pending:
            batch, size, addr = self._pending[0]
            if not self._send_one(batch, size, addr):
                return
            self._pending.popleft()
        self._loop.remove_writer(self._fd)
        self._writing = False


_SEGMENT = struct.Struct("=H")
