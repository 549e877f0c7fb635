"""qh3 2.1.0 (PyPI; aioquic's fork with a Rust core) as an interop client: a small HTTP/3 client
on qh3's asyncio API (``scripts/qh3_client.py``), run by the peers venv.

v2: the client starts in QUIC v2. Started in v1 with v2 offered (compatible negotiation,
RFC 9368, as aioquic's ``--negotiate-v2`` does) qh3 2.1.0 stalls once the server's Initials
switch to v2 (seen against aioquic 1.7.2 and hypercorn), so that variant is not used.
"""

from __future__ import annotations

import sys

from interop.contract import PEERS_VENV, EndpointEnv, unsupported, venv_python
from interop.peers import PeerInfo, log_options, python_env, run_step, script, unsupported_reason
from interop.testcases import BY_NAME

INFO = PeerInfo(
    name="qh3",
    description="qh3 2.1.0 asyncio HTTP/3 client (interop/peers/scripts/qh3_client.py)",
    module="interop.peers.qh3",
    roles=("client",),
    alpns=("h3",),
)


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(INFO, env, not_h3="qh3 has no HTTP/0.9 (hq-interop) layer")
    if reason is not None:
        return unsupported(reason)
    assert env.downloads is not None
    tc = BY_NAME[env.testcase]
    argv = [str(venv_python(PEERS_VENV)), str(script("qh3_client.py")),
            "--host", env.host, "--port", str(env.port), "--ca", str(env.ca),
            "--out", str(env.downloads), "--mode", tc.connections,
            "--timeout", str(tc.timeout_s)]  # fmt: skip
    flags = {"zerortt": "--zero-rtt", "keyupdate": "--key-update", "chacha20": "--chacha20",
             "v2": "--v2"}  # fmt: skip
    if env.testcase in flags:
        argv.append(flags[env.testcase])
    if env.byte_range:
        argv += ["--range", env.byte_range]
    argv += log_options(env)
    done = run_step(argv + list(env.requests), env=python_env(), timeout=tc.timeout_s + 5)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
