"""The plugin interface of the bench: a :class:`System` and helpers to measure its clients.

A system is one row of the table (a server plus the client used against it). To add one,
write a module under ``tools/bench/systems/`` with a ``systems()`` function returning
``System`` objects, and add its module name to ``MODULES`` in ``tools/bench/systems/__init__.py``.

The orchestrator calls, for each system: ``setup(env)`` once, then ``unsupported(workload)``
and, if that is None, ``run(workload, ctx)`` once per repetition, then ``teardown()`` (also
on errors and Ctrl-C). ``run`` returns a :class:`~tools.bench.model.Sample`: the helpers
:func:`run_driver` (a Python client speaking the READY/GO protocol of tools.bench.driver) and
:func:`run_cli` (any client program, timed from start to exit) fill in elapsed time, bytes,
CPU seconds and peak RSS of both sides; the orchestrator checks sizes and the sha256.

Measurement sources: server CPU = utime+stime of the server's process tree from
/proc/<pid>/stat over the window; server peak RSS = sum of VmHWM (/proc/<pid>/status) over the
tree, reset at the window start through /proc/<pid>/clear_refs; client CPU and peak RSS =
the driver's own getrusage/VmHWM over the window, or the wait4 rusage of a CLI client.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tools.bench import impair
from tools.bench.model import Profile, Sample, Workload
from tools.bench.objects import ObjectSet
from tools.bench.procs import (
    Child,
    Registry,
    cpu_seconds,
    descendants,
    reset_hwm,
    status_kib,
    vm_hwm_kib,
)


@dataclass
class BenchEnv:
    """Everything a system needs to start servers and clients for one bench run."""

    workdir: Path
    """Scratch folder of this run (tmpfs when available); removed at the end."""
    objects: ObjectSet
    cert: Path
    """Self-signed certificate (PEM), SAN 127.0.0.1, ::1, localhost; also the clients' CA."""
    key: Path
    profile: Profile
    procs: Registry
    cache_dir: Path
    """Persistent cache (downloaded sources), under bench-results/.cache by default."""
    repo_root: Path
    python: str = sys.executable
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def path(self, *parts: str) -> Path:
        """A path under the work dir, with parent folders created."""
        p = self.workdir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def unique(self, stem: str) -> str:
        """``stem`` with a per-run sequence number (for spec, log and download names)."""
        return f"{stem}-{next(self._seq):04d}"


@dataclass
class RunContext:
    """Per-repetition settings the orchestrator passes to ``System.run``."""

    rep: int
    timeout_s: float
    """Bound on this measurement, s."""
    verify_path: Path | None = None
    """When set, the client writes the (single) body here; the orchestrator checks sha256."""


@runtime_checkable
class System(Protocol):
    """One row of the table: a server (and variant) plus the client used against it."""

    key: str
    """Short id for ``--systems`` (lowercase, no spaces)."""
    family: str
    """Group id for ``--systems`` (all variants of one system share it)."""
    name: str
    """Row label in the table."""
    notes: str
    """One line on how the row is measured (client used, caveats)."""

    def unsupported(self, workload: Workload) -> str | None:
        """None if ``workload`` can run, else the reason shown as "n/a"."""

    def setup(self, env: BenchEnv) -> None:
        """Prepare (start the default server); called once before any ``run``."""

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        """Measure one repetition of ``workload``."""

    def teardown(self) -> None:
        """Stop every process this system started (by PID)."""


# --------------------------------------------------------------------------- servers


@dataclass
class ServerHandle:
    """A running server process (tree) and the port it listens on."""

    child: Child
    port: int
    _cpu0: float = 0.0

    def begin(self) -> None:
        """Start a measurement window: reset peak RSS, snapshot CPU seconds."""
        pids = descendants(self.child.pid)
        for pid in pids:
            reset_hwm(pid)
        self._cpu0 = sum(cpu_seconds(p) for p in pids)

    def end(self, sample: Sample) -> None:
        """End the window: store the tree's CPU seconds, summed peak RSS (KiB) and summed
        RssAnon at the end (KiB; private memory, without mapped files) in ``sample``."""
        pids = descendants(self.child.pid)
        cpu = sum(cpu_seconds(p) for p in pids) - self._cpu0
        sample.server_cpu_s = max(cpu, 0.0)
        sample.server_rss_kib = sum(vm_hwm_kib(p) for p in pids)
        sample.server_anon_kib = sum(status_kib(p, "RssAnon") for p in pids)


class ManagedSystem:
    """Base class: servers cached per configuration key, stopped at teardown.

    Subclasses set ``key``, ``family``, ``name``, ``notes`` and implement
    ``start_server(config)`` and ``run``; ``server(config)`` starts one on first use.
    """

    key = ""
    family = ""
    name = ""
    notes = ""
    protocol = "quic"
    """"quic" (UDP, can be impaired) or "tcp"."""

    def __init__(self) -> None:
        self.env: BenchEnv | None = None
        self._servers: dict[Hashable, ServerHandle] = {}

    # -- System protocol -------------------------------------------------------------

    def unsupported(self, workload: Workload) -> str | None:
        if workload.quic_only and self.protocol != "quic":
            return "QUIC-only workload (UDP impairment proxy / datagram size)"
        if workload.impaired and not impair.available(self._env.repo_root):
            return "proxy not available (tools/impair_proxy.py missing)"
        return None

    def setup(self, env: BenchEnv) -> None:
        self.env = env
        self.server(self.default_config())

    def teardown(self) -> None:
        if self.env is None:
            return
        for handle in self._servers.values():
            self.env.procs.stop(handle.child)
        self._servers.clear()

    # -- helpers ---------------------------------------------------------------------

    @property
    def _env(self) -> BenchEnv:
        if self.env is None:
            raise RuntimeError(f"{self.key}: setup() was not called")
        return self.env

    def default_config(self) -> Hashable:
        """Configuration key of the server started by ``setup``."""
        return None

    def start_server(self, config: Hashable) -> ServerHandle:
        """Start a server for ``config`` and wait until it listens."""
        raise NotImplementedError

    def server(self, config: Hashable) -> ServerHandle:
        """The running server for ``config`` (started on first use; restarted if dead)."""
        handle = self._servers.get(config)
        if handle is not None and not handle.child.alive():
            del self._servers[config]
            handle = None
        if handle is None:
            try:
                handle = self.start_server(config)
            except (RuntimeError, TimeoutError):  # e.g. the probed free port got taken
                handle = self.start_server(config)
            self._servers[config] = handle
        return handle

    @contextmanager
    def target_port(self, workload: Workload, server: ServerHandle) -> Iterator[int]:
        """The port the client should use: the server's, or an impairment proxy's for (e)."""
        if not workload.impaired:
            yield server.port
            return
        env = self._env
        prof = env.profile
        proxy, port = impair.start_proxy(
            env, server.port, prof.delay_ms, prof.loss, lifetime_s=prof.timeout_s + 30
        )
        try:
            yield port
        finally:
            env.procs.stop(proxy)


# --------------------------------------------------------------------------- clients


def driver_spec(
    env: BenchEnv, workload: Workload, ctx: RunContext, port: int, **extra: Any
) -> dict[str, Any]:
    """The JSON spec a tools.bench.driver client reads (see that module)."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "requests": [[r.path, r.size, r.start, r.end] for r in workload.requests],
        "concurrency": workload.concurrency,
        "deadline_s": ctx.timeout_s,
        "warmup_path": env.objects.warmup.path,
        "warmup": workload.concurrency,
        "body_path": str(ctx.verify_path) if ctx.verify_path else None,
        "cafile": str(env.cert),
        **extra,
    }


def run_driver(
    env: BenchEnv,
    label: str,
    module: str,
    spec: dict[str, Any],
    server: ServerHandle,
    timeout_s: float,
    *,
    connect_timeout_s: float = 30.0,
    environ: dict[str, str] | None = None,
) -> Sample:
    """Run a Python client module speaking the READY/GO protocol; measure both sides.
    ``environ``: variables added to the client's environment."""
    name = env.unique(label)
    spec_path = env.path("specs", f"{name}.json")
    spec_path.write_text(json.dumps(spec))
    child = env.procs.spawn(
        label,
        [env.python, "-m", module, str(spec_path)],
        cwd=env.repo_root,
        env={**os.environ, **environ} if environ else None,
        log_path=env.path("logs", f"{name}.log"),
        capture_stdout=True,
        stdin_pipe=True,
    )
    sample = Sample(client=module.rsplit(".", 1)[-1])
    result: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + connect_timeout_s
        line: str | None = ""
        while line is not None and line != "READY" and not line.startswith("RESULT "):
            line = child.read_line(deadline - time.monotonic())
        if line != "READY":
            detail = line[7:] if line and line.startswith("RESULT ") else "no READY line"
            return Sample(status="error", error=f"client setup failed: {detail[:300]}",
                          client=sample.client)
        server.begin()
        assert child.popen.stdin is not None
        child.popen.stdin.write(b"GO\n")
        child.popen.stdin.flush()
        deadline = time.monotonic() + timeout_s + 10.0
        while result is None:
            line = child.read_line(deadline - time.monotonic())
            if line is None:
                break
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        server.end(sample)
        if result is None:
            sample.status = "timeout" if child.alive() else "error"
            sample.error = "no result from client" + ("" if child.alive() else " (it exited)")
            return sample
        sample.status = result.get("status", "error")
        sample.error = result.get("error", "")
        sample.elapsed_s = result.get("elapsed_s", 0.0)
        sample.bytes = result.get("bytes", 0)
        sample.requests = result.get("requests", 0)
        sample.lat_ms = result.get("lat_ms")
        sample.client_cpu_s = result.get("cpu_s")
        sample.client_rss_kib = result.get("rss_kib")
        return sample
    finally:
        # After a result the client closes its connection and exits; otherwise stop it now.
        if result is not None and child.wait4(5.0):
            env.procs.stop(child, grace=0.0)
        else:
            env.procs.stop(child)


@dataclass
class CliRun:
    """What :func:`run_cli` observed: a sample with times/CPU/RSS and the client's stdout."""

    sample: Sample
    stdout: list[str]
    exit_code: int | None


def run_cli(
    env: BenchEnv,
    label: str,
    argv: list[str],
    server: ServerHandle,
    timeout_s: float,
    *,
    cwd: Path | None = None,
) -> CliRun:
    """Run a client program from start to exit under ``timeout_s``; measure both sides.

    Client CPU and peak RSS come from the wait4 rusage of the process (whole lifetime).
    """
    name = env.unique(label)
    server.begin()
    t0 = time.perf_counter()
    child = env.procs.spawn(
        label, argv, cwd=cwd or env.workdir, log_path=env.path("logs", f"{name}.log"),
        capture_stdout=True,
    )
    finished = child.wait4(timeout_s)
    elapsed = time.perf_counter() - t0
    sample = Sample(client=Path(argv[0]).name, elapsed_s=elapsed)
    server.end(sample)
    if not finished:
        env.procs.stop(child)
        sample.status = "timeout"
        sample.error = f"client still running after {timeout_s:.0f} s"
    else:
        env.procs.stop(child, grace=0.0)
    ru = child.rusage
    if ru is not None:
        sample.client_cpu_s = ru.ru_utime + ru.ru_stime  # type: ignore[attr-defined]
        sample.client_rss_kib = ru.ru_maxrss  # type: ignore[attr-defined]
    lines: list[str] = []
    while (line := child.read_line(1.0)) is not None:
        lines.append(line)
    code = child.popen.returncode
    if sample.status == "ok" and code != 0:
        sample.status = "error"
        sample.error = f"exit code {code}: {' | '.join(lines[-3:])[:300]}"
    return CliRun(sample=sample, stdout=lines, exit_code=code)


def python_env(**extra: str) -> dict[str, str]:
    """A copy of os.environ plus ``extra`` (for child processes)."""
    env = dict(os.environ)
    env.update(extra)
    return env
