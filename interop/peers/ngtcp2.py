"""ngtcp2 0.12.1's example HTTP/3 server and client (Debian ``ngtcp2-server``/``ngtcp2-client``:
``/usr/sbin/gtlsserver``, ``/usr/bin/gtlsclient``, GnuTLS backend) as an interop endpoint.

GnuTLS writes the TLS secrets to ``$SSLKEYLOGFILE`` by itself. The client does not verify the
server's certificate (the example has no CA option).
"""

from __future__ import annotations

import shutil
import sys

from interop.contract import EndpointEnv, unsupported
from interop.peers import PeerInfo, exec_server, keylog_environ, run_step, unsupported_reason
from interop.testcases import BY_NAME

GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
CHACHA_ONLY = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"
"""GnuTLS priority string allowing only TLS_CHACHA20_POLY1305_SHA256."""

_V2 = (
    "ngtcp2 0.12.1 knows only a draft of QUIC v2 (0x709a50c4, 'v2draft'), not RFC 9369's 0x6b3343cf"
)

INFO = PeerInfo(
    name="ngtcp2",
    description="ngtcp2 0.12.1 gtlsserver / gtlsclient (Debian 12, GnuTLS)",
    module="interop.peers.ngtcp2",
    roles=("server", "client"),
    alpns=("h3",),
    unsupported={
        "server": {
            "v2": _V2,
            "rangedget": "gtlsserver ignores the Range header and answers 200 with the whole file",
        },
        "client": {
            "v2": _V2,
            "rangedget": "gtlsclient has no option to add a request header such as Range",
        },
    },
)


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(
        INFO, env, not_h3="the Debian ngtcp2 examples speak only h3 (no hq-interop build)"
    )
    if reason is not None:
        return unsupported(reason)
    penv = keylog_environ(env)
    if env.role == "server":
        assert env.www is not None
        argv = [GTLSSERVER, "-q", "-d", str(env.www)]
        if env.qlogdir:
            argv.append(f"--qlog-dir={env.qlogdir}")
        if env.testcase == "retry":
            argv.append("-V")
        if env.testcase == "chacha20":
            argv.append(f"--ciphers={CHACHA_ONLY}")
        argv += [env.host, str(env.port), str(env.key), str(env.cert)]
        return exec_server(argv, env=penv)
    return _client(env, penv)


def _client(env: EndpointEnv, penv: dict[str, str]) -> int:
    assert env.downloads is not None
    tc = BY_NAME[env.testcase]
    base = [GTLSCLIENT, "-q", "--exit-on-all-streams-close", f"--download={env.downloads}",
            "--timeout=30s", "--handshake-timeout=60s"]  # fmt: skip
    if env.testcase == "chacha20":
        base.append(f"--ciphers={CHACHA_ONLY}")
    if env.testcase == "keyupdate":
        base.append("--key-update=1ms")
    urls = list(env.requests)
    if tc.connections == "each":
        batches = [[u] for u in urls]
    elif tc.connections == "resume":
        batches = [urls[:1], urls[1:]]
        session = [f"--session-file={env.logs / 'session.pem'}", f"--tp-file={env.logs / 'tp.txt'}"]
        base += session
    else:
        batches = [urls]
    for n, batch in enumerate(batches):
        if not batch:
            continue
        argv = list(base)
        if env.qlogdir:
            argv.append(f"--qlog-file={env.qlogdir / f'client-{n}.qlog'}")
        if tc.connections == "resume" and n == 1 and env.testcase != "zerortt":
            argv.append("--disable-early-data")
        argv += [env.host, str(env.port), *batch]
        done = run_step(argv, env=penv, timeout=tc.timeout_s)
        if done.returncode != 0:
            return done.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
