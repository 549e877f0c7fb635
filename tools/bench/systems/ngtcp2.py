"""ngtcp2 0.12.1 from Debian: ``gtlsserver`` (GnuTLS, C) and ``gtlsclient`` as the client.

Each measurement runs ``gtlsclient -q --exit-on-all-streams-close --download=DIR`` with all
the workload's URIs; files land in the tmpfs work dir and their count and sizes are checked
(the sha256 of the big object once). Caveats, also in the table notes:

* gtlsclient does not verify the server certificate; gtlsserver ignores Range, so (b) is n/a.
* gtlsclient has no concurrency knob: it opens as many streams as the server allows, so the
  server is started with ``--max-streams-bidi=1`` for sequential (c) and ``=32`` for 32 in
  flight ((c) and (d)).
* It reports no per-request times: sequential (c) shows the mean time per request, not p50/p99.
* Times are wall clock from process start to exit, minus a fixed overhead (process start,
  handshake, one 4 KiB GET) calibrated at setup as the fastest of 3 runs.
* gtlsserver mmaps the files it serves, so its peak RSS (VmHWM) counts those file pages
  (shared tmpfs pages, about the bytes served); the JSON also has RssAnon.
* ``--max-udp-payload-size`` (bytes) is passed to both sides: 65000 for the jumbo variant,
  1452 for (f). The default lets ngtcp2's PMTUD probe up to 1452 on its own.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Hashable
from pathlib import Path

from tools.bench.model import Sample, Workload
from tools.bench.procs import free_port, wait_listening
from tools.bench.systems.base import BenchEnv, ManagedSystem, RunContext, ServerHandle, run_cli

SERVER = "gtlsserver"
CLIENT = "gtlsclient"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


class Ngtcp2(ManagedSystem):
    """gtlsserver + gtlsclient with an optional UDP payload size (bytes)."""

    family = "ngtcp2"
    protocol = "quic"

    def __init__(self, key: str, name: str, *, payload: int | None) -> None:
        super().__init__()
        self.key, self.name, self.payload = key, name, payload
        size = f"{payload} B" if payload else "default (PMTUD)"
        self.notes = (
            f"gtlsserver + gtlsclient, datagrams {size}; client does not verify certs; "
            "server ignores Range; (c) sequential = mean per request; server RSS counts "
            "the files it mmaps"
        )
        self.overhead_s = 0.0

    def unsupported(self, workload: Workload) -> str | None:
        if len(workload.requests) > 1 and workload.requests[0].start is not None:
            return "gtlsserver ignores Range"
        if workload.max_datagram and self.payload:
            return "datagram-size variant; (f) is measured on the base row"
        return super().unsupported(workload)

    def setup(self, env: BenchEnv) -> None:
        if not (_which(SERVER) and _which(CLIENT)):
            raise RuntimeError("gtlsserver/gtlsclient not installed (python -m tools.bench "
                               "--install)")
        super().setup(env)
        server = self.server(self.default_config())
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            sample = self._client(server, server.port, [env.objects.warmup.path], self.payload,
                                  timeout_s=30.0)
            if sample.status == "ok":
                times.append(time.perf_counter() - t0)
        self.overhead_s = min(times) if times else 0.0

    def default_config(self) -> Hashable:
        return (self.payload, None)

    def start_server(self, config: Hashable) -> ServerHandle:
        env = self._env
        payload, streams = config  # type: ignore[misc]
        port = free_port("udp")
        argv = [_which(SERVER) or SERVER, "-q", "-d", str(env.objects.root)]
        if payload:
            argv.append(f"--max-udp-payload-size={payload}")
        if streams:
            argv.append(f"--max-streams-bidi={streams}")
        argv += ["127.0.0.1", str(port), str(env.key), str(env.cert)]
        child = env.procs.spawn(
            f"{self.key}-server", argv, cwd=env.workdir,
            log_path=env.path("logs", f"{env.unique(self.key + '-server')}.log"),
        )
        try:
            wait_listening(child, port, "udp")
        except Exception:
            env.procs.stop(child)
            raise
        return ServerHandle(child=child, port=port)

    def _client(
        self,
        server: ServerHandle,
        port: int,
        paths: list[str],
        payload: int | None,
        timeout_s: float,
        verify_path: Path | None = None,
    ) -> Sample:
        env = self._env
        dl = env.path("dl", env.unique(self.key))
        dl.mkdir()
        argv = [_which(CLIENT) or CLIENT, "-q", "--exit-on-all-streams-close", f"--download={dl}"]
        if payload:
            argv.append(f"--max-udp-payload-size={payload}")
        argv += ["127.0.0.1", str(port)]
        argv += [f"https://127.0.0.1:{port}{p}" for p in paths]
        run = run_cli(env, f"{self.key}-client", argv, server, timeout_s)
        files = [e for e in os.scandir(dl) if e.is_file()]
        run.sample.requests = len(files)
        run.sample.bytes = sum(e.stat().st_size for e in files)
        if verify_path is not None and len(files) == 1:
            os.replace(files[0].path, verify_path)
        shutil.rmtree(dl, ignore_errors=True)
        return run.sample

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        payload = workload.max_datagram or self.payload
        streams = None
        if not workload.impaired and not workload.max_datagram and len(workload.requests) > 1:
            streams = workload.concurrency
        server = self.server((payload, streams))
        with self.target_port(workload, server) as port:
            sample = self._client(
                server, port, [r.path for r in workload.requests], payload, ctx.timeout_s,
                ctx.verify_path,
            )
        sample.overhead_s = self.overhead_s
        return sample


def systems() -> list[Ngtcp2]:
    """Rows: default datagrams and 65000-byte datagrams."""
    return [
        Ngtcp2("ngtcp2", "ngtcp2 gtls", payload=None),
        Ngtcp2("ngtcp2-65k", "ngtcp2 gtls 65000B dgram", payload=65000),
    ]
