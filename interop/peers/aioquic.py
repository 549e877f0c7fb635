"""aioquic 1.7.2's examples (http3_server.py, http3_client.py) as an interop endpoint.

The examples are not in the wheel: ``python -m interop.install`` extracts them from the sdist into
``interop/.cache/aioquic-1.7.2/examples`` (never into the repository). They run with the peers
venv (aioquic 1.7.2 + starlette, jinja2, wsproto) from inside ``examples/``; the server's demo app
serves ``$STATIC_ROOT`` (= WWW) through starlette's StaticFiles, which honours Range. Files must
not be named by a bare number (``/<n>`` is the demo's n-byte route).
"""

from __future__ import annotations

import sys
from pathlib import Path

from interop.contract import (
    AIOQUIC_VERSION,
    CACHE_DIR,
    PEERS_VENV,
    EndpointEnv,
    unsupported,
    venv_python,
)
from interop.peers import PeerInfo, exec_server, python_env, run_step, unsupported_reason
from interop.testcases import BY_NAME

INFO = PeerInfo(
    name="aioquic",
    description=f"aioquic {AIOQUIC_VERSION} examples http3_server.py / http3_client.py (sdist)",
    module="interop.peers.aioquic",
    roles=("server", "client"),
    alpns=("hq-interop", "h3"),
    unsupported={
        "client": {
            "rangedget": "http3_client.py has no option to add a request header such as Range",
        },
    },
)


def examples_dir() -> Path:
    """The extracted ``examples/`` folder (run ``python -m interop.install`` first)."""
    return CACHE_DIR / f"aioquic-{AIOQUIC_VERSION}" / "examples"


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(INFO, env)
    if reason is not None:
        return unsupported(reason)
    python = str(venv_python(PEERS_VENV))
    ex = examples_dir()
    if env.role == "server":
        assert env.www is not None
        argv = [python, "http3_server.py", "--host", env.host, "--port", str(env.port),
                "-c", str(env.cert), "-k", str(env.key)]  # fmt: skip
        if env.testcase == "retry":
            argv.append("--retry")
        if env.qlogdir:
            argv += ["-q", str(env.qlogdir)]
        if env.keylog:
            argv += ["-l", str(env.keylog)]
        return exec_server(argv, cwd=ex, env=python_env({"STATIC_ROOT": str(env.www)}))
    return _client(env, python, ex)


def _client(env: EndpointEnv, python: str, ex: Path) -> int:
    assert env.downloads is not None
    tc = BY_NAME[env.testcase]
    base = [python, "http3_client.py", "--ca-certs", str(env.ca),
            "--output-dir", str(env.downloads)]  # fmt: skip
    if env.alpn == "hq-interop":
        base.append("--legacy-http")
    if env.testcase == "chacha20":
        base += ["--cipher-suites", "CHACHA20_POLY1305_SHA256"]
    if env.testcase == "keyupdate":
        base.append("--key-update")
    if env.testcase == "v2":
        base.append("--negotiate-v2")
    if env.qlogdir:
        base += ["-q", str(env.qlogdir)]
    if env.keylog:
        base += ["-l", str(env.keylog)]
    urls = list(env.requests)
    if tc.connections == "each":
        runs = [(base, [u]) for u in urls]
    elif tc.connections == "resume":
        ticket = env.logs / "session_ticket.bin"
        second = [*base, "-s", str(ticket)]
        if env.testcase == "zerortt":
            second.append("--zero-rtt")
        runs = [([*base, "-s", str(ticket)], urls[:1]), (second, urls[1:])]
    else:
        runs = [(base, urls)]
    for argv, batch in runs:
        if not batch:
            continue
        done = run_step(argv + batch, cwd=ex, env=python_env(), timeout=tc.timeout_s)
        if done.returncode != 0:
            return done.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
