"""quicstore's own endpoint (``python -m interop.endpoint``, written with the gateway and client).

Unlike the reference peers it needs no wrapper: ``interop/endpoint.py`` implements the contract
itself, so nothing is declared unsupported here; the endpoint says so by exiting 127. It speaks
h3 (quicstore serves its objects over HTTP/3 as well as quicstore/1) and hq-interop: as a
server it offers both, as a client it uses ``$ALPN``.
"""

from __future__ import annotations

from interop.contract import INTEROP_DIR
from interop.peers import PeerInfo

ENDPOINT = INTEROP_DIR / "endpoint.py"
"""The endpoint's file; cells fail with a clear reason while it does not exist."""

INFO = PeerInfo(
    name="quicstore",
    description="quicstore (python -m interop.endpoint)",
    module="interop.endpoint",
    roles=("server", "client"),
    alpns=("hq-interop", "h3"),
)
