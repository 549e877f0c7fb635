"""UDP socket details: path MTU from the kernel, don't-fragment, buffer sizes (Linux)."""

from __future__ import annotations

import contextlib
import socket

# Linux values (not exported by Python's socket module).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_MTU = 14
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
IPV6_MTU = 24

QUIC_MIN_DATAGRAM = 1200
"""Smallest UDP payload every QUIC path must carry (RFC 9000, 14)."""
MAX_DATAGRAM = 65000
"""Largest UDP payload quicstore sends (loopback carries 65507; keep a margin)."""


def set_dont_fragment(sock: socket.socket) -> None:
    """Set DF so that oversized datagrams are dropped, not fragmented (RFC 9000, 14)."""
    with contextlib.suppress(OSError):
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)


def path_mtu(family: int, address: tuple[object, ...]) -> int | None:
    """The kernel's MTU for the route to ``address`` (bytes of IP packet), or None."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            if family == socket.AF_INET6:
                return probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            return probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


def datagram_size_for(family: int, address: tuple[object, ...], cap: int | None) -> int:
    """The UDP payload size to use towards ``address``: the route's MTU less IP and UDP
    headers, at most ``cap`` (None: :data:`MAX_DATAGRAM`), at least 1200."""
    mtu = path_mtu(family, address)
    header = 48 if family == socket.AF_INET6 else 28
    size = (mtu - header) if mtu else QUIC_MIN_DATAGRAM
    return max(QUIC_MIN_DATAGRAM, min(cap or MAX_DATAGRAM, size, MAX_DATAGRAM))


# Linux UDP offloads (not exported by Python's socket module).
SOL_UDP = 17
UDP_SEGMENT = 103
"""Send several equal-sized datagrams in one call (GSO, Linux 4.18+)."""
UDP_GRO = 104
"""Receive several datagrams of one flow in one call (GRO, Linux 5.0+)."""
GSO_MAX_SEGMENTS = 64
"""Datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS)."""
GSO_MAX_BYTES = 65000
"""Bytes per GSO send: all segments together must fit one maximal UDP datagram."""


def gso_supported(sock: socket.socket) -> bool:
    """True if the kernel offers UDP_SEGMENT on this socket."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced receives (UDP_GRO); True if the kernel accepted."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gso_batches(
    datagrams: list[bytes],
    max_segments: int = GSO_MAX_SEGMENTS,
    max_bytes: int = GSO_MAX_BYTES,
) -> list[tuple[list[bytes], int]]:
    """Group consecutive datagrams into GSO sends: ``(segments, segment_size)`` where every
    segment but the last is ``segment_size`` bytes and the last is at most that (the
    kernel's rule), at most ``max_segments`` and ``max_bytes`` in all. Order is kept."""
    batches: list[tuple[list[bytes], int]] = []
    current: list[bytes] = []
    size = total = 0
    for datagram in datagrams:
        length = len(datagram)
        if (
            current
            and length <= size
            and len(current) < max_segments
            and total + length <= max_bytes
            and len(current[-1]) == size
        ):
            current.append(datagram)
            total += length
            continue
        if current:
            batches.append((current, size))
        current, size, total = [datagram], length, length
    if current:
        batches.append((current, size))
    return batches


def split_coalesced(data: memoryview, segment_size: int) -> list[bytes]:
    """The datagrams in one GRO receive of ``data``, each ``segment_size`` bytes (the last
    possibly shorter); ``segment_size`` 0 means one datagram."""
    if segment_size <= 0 or len(data) <= segment_size:
        return [bytes(data)]
    return [bytes(data[i : i + segment_size]) for i in range(0, len(data), segment_size)]
