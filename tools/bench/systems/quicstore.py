"""quicstore: the gateway (``quicstore serve``, its own process) and the SDK client
(tools.bench.clients.quicstore). The objects are uploaded with ``quicstore put -r`` before
any measurement, so the gateway serves them from its own store.

Rows:
- ``quicstore``: disk store, fan-out GETs with adaptive prefetch (the product's default);
- ``quicstore-h3``: the same gateway and store over HTTP/3 (quicstore's HTTP/3 client, one
  connection; ranges in parallel for fan-out workloads as the driver issues them);
- ``quicstore-mem``: the same from the memory store (store versus transport, workload a);
- ``quicstore-1stream``: one request per object (no fan-out), for (a) versus fan-out;
- ``quicstore-pypath``: the default row with the 1-RTT data path on aioquic's Python
  (QUICSTORE_NATIVE=0 on both sides) instead of quicstore._native, for (a), (c), (e), (f);
- ``quicstore-adaptive`` / ``quicstore-depth1`` / ``quicstore-depth64``: adaptive prefetch
  against fixed depths of 1 and 64, with 1 MiB parts so that depth matters, for (e) only.
"""

from __future__ import annotations

import os
from collections.abc import Hashable

from tools.bench.model import Sample, Workload
from tools.bench.procs import wait_ready_line
from tools.bench.systems.base import (
    BenchEnv,
    ManagedSystem,
    RunContext,
    ServerHandle,
    driver_spec,
    run_driver,
)

CLIENT = "tools.bench.clients.quicstore"
H3_CLIENT = "tools.bench.clients.quicstore_h3"
MIB = 1 << 20


class Quicstore(ManagedSystem):
    """A quicstore gateway and client with one client-side variant."""

    family = "quicstore"
    protocol = "quic"

    def __init__(self, key: str, name: str, *, store: str = "disk",
                 client: dict[str, int] | None = None, only: tuple[str, ...] = (),
                 client_module: str = CLIENT, environ: dict[str, str] | None = None) -> None:
        super().__init__()
        self.environ = environ or {}
        self.key, self.name = key, name
        self.client_module = client_module
        self.store = store
        self.client = client or {}
        self.only = only
        knobs = ", ".join(f"{k}={v}" for k, v in self.client.items()) or "adaptive prefetch"
        self.notes = (f"quicstore serve ({store} store, uvloop) + SDK client ({knobs}), one "
                      "QUIC connection, datagrams as the route allows")
        if self.environ:
            self.notes += "; " + " ".join(f"{k}={v}" for k, v in self.environ.items())
        if client_module != CLIENT:
            self.notes = (f"quicstore serve ({store} store, uvloop) + quicstore's HTTP/3 "
                          "client, one QUIC connection, datagrams as the route allows")

    def unsupported(self, workload: Workload) -> str | None:
        if self.only and workload.group not in self.only:
            return f"variant measured on {', '.join(self.only)} only"
        return super().unsupported(workload)

    def default_config(self) -> Hashable:
        return None

    def start_server(self, config: Hashable) -> ServerHandle:
        env = self._env
        root = env.path(f"qs-{self.key}-{config or 'auto'}", "root")
        argv = [
            env.python, "-m", "quicstore", "serve", "--root", str(root),
            "--listen", "127.0.0.1:0", "--open", "--store", self.store,
            "--cert", str(env.cert), "--key", str(env.key),
        ]  # fmt: skip
        if config:
            argv += ["--max-datagram-size", str(config)]
        child = env.procs.spawn(
            f"{self.key}-server", argv, cwd=env.repo_root, capture_stdout=True,
            env={**os.environ, **self.environ} if self.environ else None,
            log_path=env.path("logs", f"{env.unique(self.key + '-server')}.log"),
        )
        try:
            line = wait_ready_line(child, "quicstore gateway listening")
            port = int(line.split("quicstore://", 1)[1].split()[0].rsplit(":", 1)[1])
            self._load(env, port)
        except Exception:
            env.procs.stop(child)
            raise
        return ServerHandle(child=child, port=port)

    def _load(self, env: BenchEnv, port: int) -> None:
        """Upload the bench objects this row needs (outside any measured window)."""
        url = f"quicstore://127.0.0.1:{port}/bench/"
        objects = env.objects
        if not self.only or {"c", "d"} & set(self.only):
            jobs = [["put", "-r", "-q", str(objects.root), url]]
        else:
            needed = [objects.warmup] + ([objects.big] if {"a", "b", "f"} & set(self.only)
                                         else []) + ([objects.impaired] if "e" in self.only
                                                     else [])
            jobs = [["put", "-q", str(objects.root / o.path.lstrip("/")),
                     url + o.path.lstrip("/")] for o in needed]
        for job in jobs:
            argv = [env.python, "-m", "quicstore", *job, "--ca", str(env.cert)]
            log = env.path("logs", f"{env.unique(self.key + '-load')}.log")
            loader = env.procs.spawn(f"{self.key}-load", argv, cwd=env.repo_root, log_path=log)
            if not loader.wait4(600):
                env.procs.stop(loader)
                raise RuntimeError(f"{self.key}: loading the objects did not finish")
            if loader.popen.returncode != 0:
                raise RuntimeError(f"{self.key}: loading the objects failed "
                                   f"(exit {loader.popen.returncode}, see {log})")

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        env = self._env
        server = self.server(workload.max_datagram)
        with self.target_port(workload, server) as port:
            spec = driver_spec(env, workload, ctx, port, loop="uvloop", bucket="bench",
                               max_datagram_size=workload.max_datagram, **self.client)
            return run_driver(env, f"{self.key}-client", self.client_module, spec, server,
                              ctx.timeout_s, environ=self.environ)


def systems() -> list[Quicstore]:
    """The default row first, then the variants that isolate one factor each."""
    return [
        Quicstore("quicstore", "quicstore"),
        Quicstore("quicstore-h3", "quicstore HTTP/3", client_module=H3_CLIENT),
        Quicstore("quicstore-mem", "quicstore memory store", store="memory", only=("a",)),
        Quicstore("quicstore-1stream", "quicstore single stream",
                  client={"part_size": 1 << 40, "max_parts": 1, "min_parts": 1}, only=("a",)),
        Quicstore("quicstore-pypath", "quicstore, Python packet path", only=("a", "c", "e", "f"),
                  environ={"QUICSTORE_NATIVE": "0"}),
        Quicstore("quicstore-adaptive", "quicstore adaptive, 1 MiB parts",
                  client={"part_size": MIB}, only=("e",)),
        Quicstore("quicstore-depth1", "quicstore depth 1, 1 MiB parts",
                  client={"part_size": MIB, "min_parts": 1, "max_parts": 1}, only=("e",)),
        Quicstore("quicstore-depth64", "quicstore depth 64, 1 MiB parts",
                  client={"part_size": MIB, "min_parts": 64, "max_parts": 64}, only=("e",)),
    ]
