"""hypercorn 0.18 (PyPI ``hypercorn[h3]``, on aioquic 1.7.2) as an interop HTTP/3 server: one
in-process server (``scripts/hypercorn_server.py``) serving WWW with starlette's StaticFiles,
run by the peers venv. The CLI is not used: it forks workers whose ports free late.
"""

from __future__ import annotations

import sys

from interop.contract import PEERS_VENV, EndpointEnv, unsupported, venv_python
from interop.peers import PeerInfo, exec_server, log_options, python_env, script, unsupported_reason

_NO_TICKETS = (
    "hypercorn 0.18 gives aioquic no session ticket handler, so it issues no session tickets"
)
INFO = PeerInfo(
    name="hypercorn",
    description="hypercorn 0.18.0 [h3] on aioquic 1.7.2, starlette StaticFiles (in-process)",
    module="interop.peers.hypercorn",
    roles=("server",),
    alpns=("h3",),
    unsupported={
        "server": {
            "retry": "hypercorn 0.18 has no Retry / address validation option",
            "resumption": _NO_TICKETS,
            "zerortt": _NO_TICKETS + " (so no 0-RTT)",
        }
    },
)


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(INFO, env, not_h3="hypercorn speaks HTTP/3 only (no hq-interop)")
    if reason is not None:
        return unsupported(reason)
    assert env.www is not None
    argv = [str(venv_python(PEERS_VENV)), str(script("hypercorn_server.py")),
            "--host", env.host, "--port", str(env.port), "--www", str(env.www),
            "--cert", str(env.cert), "--key", str(env.key)]  # fmt: skip
    argv += log_options(env)
    return exec_server(argv, env=python_env())


if __name__ == "__main__":
    sys.exit(main())
