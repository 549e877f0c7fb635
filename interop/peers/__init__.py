"""Adapters that wrap each reference peer into the endpoint contract (``interop.contract``).

Each module here is itself an endpoint: ``python -m interop.peers.<name>`` reads ROLE, TESTCASE,
... and runs the peer (servers ``exec`` it, so the PID the driver holds is the peer's; clients
may run it more than once, e.g. two connections for resumption). Each module has an ``INFO``
(``PeerInfo``) stating its roles, ALPNs and, per role, the test cases it does not support and
why; the driver reads ``INFO`` to mark cells unsupported without starting anything, and treats
exit code 127 the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from interop.contract import PROJECT_PYTHON, REPO_DIR, EndpointEnv, Support
from interop.testcases import BY_NAME

MODULES = ("aioquic", "ngtcp2", "qh3", "niquests", "hypercorn", "chromium", "quicstore")
"""Adapter modules, in the order the matrix lists them."""


@dataclasses.dataclass(frozen=True)
class PeerInfo:
    """What an adapter wraps and what it supports."""

    name: str
    """Short key used on the command line and in the matrix."""
    description: str
    """Implementation and version, e.g. ``"ngtcp2 0.12.1 gtlsserver/gtlsclient (Debian)"``."""
    module: str
    """The endpoint module (``python -m <module>``)."""
    roles: tuple[str, ...]
    """``"server"`` and/or ``"client"``."""
    alpns: tuple[str, ...] = ("h3",)
    """ALPNs the peer speaks in these roles (``hq-interop`` and/or ``h3``)."""
    unsupported: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    """role -> test case -> the reason it is not supported (true of the peer)."""
    text_payloads: bool = False
    """Client only: it can only save text bodies, so WWW files are made of printable ASCII."""
    qlog: bool = True
    """The endpoint writes qlog into QLOGDIR in this role."""

    def support(self, role: str, testcase: str) -> Support:
        """Whether ``testcase`` is supported in ``role``."""
        if role not in self.roles:
            return Support.no(f"{self.name} has no {role} role")
        reason = self.unsupported.get(role, {}).get(testcase)
        return Support.no(reason) if reason else Support.yes()

    def command(self) -> list[str]:
        """The endpoint command line (run with cwd = repository root)."""
        return [str(PROJECT_PYTHON), "-m", self.module]


def load(name: str) -> PeerInfo:
    """``INFO`` of the adapter module ``name``."""
    module = importlib.import_module(f"interop.peers.{name}")
    info = module.INFO
    assert isinstance(info, PeerInfo)
    return info


def all_peers() -> dict[str, PeerInfo]:
    """Every adapter's ``INFO``, by name."""
    return {name: load(name) for name in MODULES}


# --------------------------------------------------------------------------------------------
# Helpers for the endpoint wrappers
# --------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def exec_server(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str]) -> int:
    """Replace this process with the server (same PID, so SIGTERM reaches it directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if cwd is not None:
        os.chdir(cwd)
    os.execvpe(argv[0], list(argv), dict(env))
    return 1  # pragma: no cover - exec does not return


_current: subprocess.Popen[bytes] | None = None


def _forward_sigterm(signum: int, _frame: object) -> None:
    if _current is not None and _current.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            _current.send_signal(signal.SIGTERM)
            try:
                _current.wait(3.0)
            except subprocess.TimeoutExpired:
                _current.kill()
    raise SystemExit(128 + signum)


def run_step(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one client process to completion (bounded by ``timeout`` seconds when given); a
    SIGTERM to this wrapper is forwarded to it by PID."""
    global _current
    signal.signal(signal.SIGTERM, _forward_sigterm)
    print("+ " + " ".join(str(a) for a in argv), file=sys.stderr, flush=True)
    proc = subprocess.Popen(
        [str(a) for a in argv],
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=stdout if stdout is not None else sys.stderr,
        stderr=sys.stderr,
        preexec_fn=_die_with_parent,
    )
    _current = proc
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        print(f"step timed out after {timeout} s", file=sys.stderr, flush=True)
    finally:
        _current = None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def unsupported_reason(
    info: PeerInfo, env: EndpointEnv, *, not_h3: str | None = None
) -> str | None:
    """Why the peer ``info`` cannot run what ``env`` asks, or None if it can: an unknown test
    case, one ``info`` does not support in ``env``'s role, or (with ``not_h3``, the reason
    given) an ALPN other than h3. The caller exits with ``unsupported(reason)``."""
    if env.testcase not in BY_NAME:
        return f"unknown test case {env.testcase}"
    support = info.support(env.role, env.testcase)
    if not support.ok:
        return support.reason
    if not_h3 is not None and env.alpn != "h3":
        return not_h3
    return None


def keylog_environ(env: EndpointEnv) -> dict[str, str]:
    """This process's environment, with ``SSLKEYLOGFILE`` naming ``env``'s key log when
    there is one (for peers whose TLS library reads it themselves)."""
    penv = dict(os.environ)
    if env.keylog:
        penv["SSLKEYLOGFILE"] = str(env.keylog)
    return penv


def log_options(env: EndpointEnv) -> list[str]:
    """``--qlog DIR`` and ``--keylog FILE`` for the helper scripts (``scripts/``), each when
    ``env`` asks for it."""
    options: list[str] = []
    if env.qlogdir:
        options += ["--qlog", str(env.qlogdir)]
    if env.keylog:
        options += ["--keylog", str(env.keylog)]
    return options


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``extra`` on top and PYTHONPATH cleared (peer venvs
    must not see the project's packages unless asked)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def script(name: str) -> Path:
    """A helper script shipped next to the adapters (run by a peer venv's python)."""
    return Path(__file__).resolve().parent / "scripts" / name


def repo_env() -> dict[str, str]:
    """An environment in which ``python -m interop...`` works from any cwd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_DIR)
    return env
