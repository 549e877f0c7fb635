"""Stock aioquic 1.7.2 HTTP/3: examples/http3_server.py serving the objects, and the
example's own client protocol (``HttpClient`` from examples/http3_client.py) as the client.

The server is the unmodified example run from the extracted ``examples/`` folder with its
``demo:app`` (starlette StaticFiles, Range supported) and ``STATIC_ROOT`` pointing at the
objects. The example installs uvloop whenever it can import it; the "without uvloop" rows put
a stand-in module first on PYTHONPATH so that import fails. Both example programs take
``--max-datagram-size`` (UDP payload, bytes; aioquic's default is 1200), used for the 16000-byte
variant and for (f). The client is tools.bench.clients.aioquic_h3 (same event loop as the
server), which reuses the example's HttpClient on one connection for every workload, so the
sequential latencies and the concurrency of (c)/(d) can be measured.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from tools.bench import aioquic_examples
from tools.bench.model import Sample, Workload
from tools.bench.procs import free_port, wait_listening
from tools.bench.systems.base import (
    BenchEnv,
    ManagedSystem,
    RunContext,
    ServerHandle,
    driver_spec,
    python_env,
    run_driver,
)

SHIM = Path(__file__).resolve().parent.parent / "shims" / "no_uvloop"
CLIENT = "tools.bench.clients.aioquic_h3"


class AioquicExample(ManagedSystem):
    """The example server and client, on asyncio or uvloop, with a datagram size."""

    family = "aioquic"
    protocol = "quic"

    def __init__(
        self, key: str, name: str, *, uvloop: bool, datagram: int | None, optional: bool = False
    ) -> None:
        super().__init__()
        self.key, self.name = key, name
        self.optional = optional
        """Left out of the default run (``--systems aioquic`` or ``=KEY`` runs it)."""
        self.uvloop = uvloop
        self.datagram = datagram
        loop = "uvloop" if uvloop else "asyncio"
        size = f"{datagram} B" if datagram else "1200 B (default)"
        self.notes = (
            f"examples/http3_server.py + example HttpClient, {loop}, datagrams {size}, "
            "reno, one connection; the example client keeps whole bodies in memory"
        )
        self._examples: Path | None = None

    def unsupported(self, workload: Workload) -> str | None:
        if workload.max_datagram and self.datagram:
            return "datagram-size variant; (f) is measured on the base rows"
        return super().unsupported(workload)

    def setup(self, env: BenchEnv) -> None:
        self._examples = aioquic_examples.examples_dir(env.cache_dir)
        super().setup(env)

    def default_config(self) -> Hashable:
        return self.datagram

    def start_server(self, config: Hashable) -> ServerHandle:
        env = self._env
        assert self._examples is not None
        port = free_port("udp")
        argv = [
            env.python, "http3_server.py",
            "--host", "127.0.0.1", "--port", str(port),
            "-c", str(env.cert), "-k", str(env.key),
        ]  # fmt: skip
        if config:
            argv += ["--max-datagram-size", str(config)]
        extra = {"STATIC_ROOT": str(env.objects.root)}
        if not self.uvloop:
            extra["PYTHONPATH"] = str(SHIM)
        child = env.procs.spawn(
            f"{self.key}-server", argv, cwd=self._examples, env=python_env(**extra),
            log_path=env.path("logs", f"{env.unique(self.key + '-server')}.log"),
        )
        try:
            wait_listening(child, port, "udp")
        except Exception:
            env.procs.stop(child)
            raise
        return ServerHandle(child=child, port=port)

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        env = self._env
        datagram = workload.max_datagram or self.datagram
        server = self.server(datagram)
        with self.target_port(workload, server) as port:
            spec = driver_spec(
                env, workload, ctx, port,
                loop="uvloop" if self.uvloop else "asyncio",
                examples_dir=str(self._examples),
                max_datagram_size=datagram,
            )  # fmt: skip
            return run_driver(env, f"{self.key}-client", CLIENT, spec, server, ctx.timeout_s)


def systems() -> list[AioquicExample]:
    """Rows: asyncio (the ratio baseline), uvloop, and 16000-byte datagrams on asyncio.
    The uvloop row is optional: at 5-9 MB/s it took about 300 s of a full run (1,321 s at
    19:08 on 2026-11-29), and the default run must stay under 20 minutes."""
    return [
        AioquicExample("aioquic", "stock aioquic h3", uvloop=False, datagram=None),
        AioquicExample(
            "aioquic-uvloop", "stock aioquic h3 uvloop", uvloop=True, datagram=None, optional=True
        ),
        AioquicExample("aioquic-16k", "stock aioquic h3 16000B dgram", uvloop=False,
                       datagram=16000),
    ]
