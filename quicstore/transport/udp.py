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
