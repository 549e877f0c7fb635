"""niquests 3.21.2 (urllib3-future 2.25 over qh3 2.1.0) as an interop client, in its own venv
(installing niquests replaces ``urllib3`` with urllib3-future in that environment).

urllib3-future builds qh3's QuicConfiguration itself (ALPN h3, default cipher suites, QUIC v1)
and reads ``SSLKEYLOGFILE`` and ``QUICLOGDIR`` from the environment.
"""

from __future__ import annotations

import sys

from interop.contract import NIQUESTS_VENV, EndpointEnv, unsupported, venv_python
from interop.peers import PeerInfo, python_env, run_step, script, unsupported_reason
from interop.testcases import BY_NAME

_NO_RESUME = (
    "urllib3-future 2.25 (niquests' transport) never hands a stored session ticket to a new "
    "connection, so a second connection cannot resume"
)
INFO = PeerInfo(
    name="niquests",
    description="niquests 3.21.2 / urllib3-future 2.25 / qh3 2.1.0 (own venv)",
    module="interop.peers.niquests",
    roles=("client",),
    alpns=("h3",),
    unsupported={
        "client": {
            "resumption": _NO_RESUME,
            "zerortt": _NO_RESUME + " (no 0-RTT either)",
            "chacha20": "urllib3-future builds qh3's QuicConfiguration with its default cipher "
            "suites; niquests has no setting to restrict them",
            "keyupdate": "niquests has no call to request a QUIC key update",
            "v2": "urllib3-future configures qh3 with QUIC v1 only; no version setting",
        }
    },
)


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(
        INFO, env, not_h3="niquests speaks HTTP/3 only over h3 (no hq-interop)"
    )
    if reason is not None:
        return unsupported(reason)
    assert env.downloads is not None
    tc = BY_NAME[env.testcase]
    argv = [str(venv_python(NIQUESTS_VENV)), str(script("niquests_client.py")),
            "--ca", str(env.ca), "--out", str(env.downloads),
            "--mode", "each" if tc.connections == "each" else "one",
            "--timeout", str(tc.timeout_s)]  # fmt: skip
    if env.byte_range:
        argv += ["--range", env.byte_range]
    extra = {}
    if env.qlogdir:
        extra["QUICLOGDIR"] = str(env.qlogdir)
    if env.keylog:
        extra["SSLKEYLOGFILE"] = str(env.keylog)
    penv = python_env(extra)
    if not env.keylog:
        penv.pop("SSLKEYLOGFILE", None)
    done = run_step(argv + list(env.requests), env=penv, timeout=tc.timeout_s + 5)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
