"""quicstore: a storage gateway and data path for AI workloads, over QUIC.

The public API: :class:`Client` (async), :class:`SyncClient`, :func:`connect`, the typed
errors of :mod:`quicstore.errors`, and :class:`ObjectInfo`.
"""

from __future__ import annotations

from .client.client import Client, ClientConfig, InsecureConnectionWarning, parse_url
from .client.fanout import GetResult
from .errors import (
    AuthError,
    ConnectionFailed,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    NotFound,
    NotModified,
    ObjectChanged,
    PreconditionFailed,
    ProtocolViolation,
    QuicstoreError,
    RangeNotSatisfiable,
    RequestFailed,
    TokenExpired,
    Unauthenticated,
)
from .store.base import ListPage, ObjectInfo

__version__ = "0.1.0"


async def connect(url: str = "quicstore://127.0.0.1:4433", **config: object) -> Client:
    """An open :class:`Client` (``config``: ClientConfig fields, e.g. ``token``, ``pin``)."""
    client = Client(url, None, **config)
    await client.connect()
    return client


__all__ = [
    "AuthError",
    "Client",
    "ClientConfig",
    "ConnectionFailed",
    "Forbidden",
    "GetResult",
    "InsecureConnectionWarning",
    "IntegrityError",
    "InvalidRequest",
    "ListPage",
    "NotFound",
    "NotModified",
    "ObjectChanged",
    "ObjectInfo",
    "PreconditionFailed",
    "ProtocolViolation",
    "QuicstoreError",
    "RangeNotSatisfiable",
    "RequestFailed",
    "TokenExpired",
    "Unauthenticated",
    "connect",
    "parse_url",
]
