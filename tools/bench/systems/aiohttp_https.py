"""aiohttp HTTPS over TCP: tools.bench.servers.aiohttp_static (FileResponse, Range supported)
and an aiohttp ClientSession (tools.bench.clients.aiohttp_https) whose TCPConnector limit
equals the workload concurrency, both on asyncio or both on uvloop. TLS 1.3, HTTP/1.1.
"""

from __future__ import annotations

from tools.bench.model import Sample, Workload
from tools.bench.procs import wait_ready_line
from tools.bench.systems.base import (
    ManagedSystem,
    RunContext,
    ServerHandle,
    driver_spec,
    run_driver,
)

CLIENT = "tools.bench.clients.aiohttp_https"


class AiohttpHttps(ManagedSystem):
    """aiohttp server and client on the same event loop kind."""

    family = "aiohttp"
    protocol = "tcp"

    def __init__(self, key: str, name: str, *, uvloop: bool) -> None:
        super().__init__()
        self.key, self.name, self.uvloop = key, name, uvloop
        self.loop = "uvloop" if uvloop else "asyncio"
        self.notes = (
            f"aiohttp FileResponse server + ClientSession, {self.loop}; HTTP/1.1, so N in "
            "flight = N TLS connections"
        )

    def start_server(self, config: object) -> ServerHandle:
        env = self._env
        argv = [
            env.python, "-m", "tools.bench.servers.aiohttp_static",
            "--root", str(env.objects.root), "--cert", str(env.cert), "--key", str(env.key),
            "--host", "127.0.0.1", "--port", "0", "--loop", self.loop,
        ]  # fmt: skip
        child = env.procs.spawn(
            f"{self.key}-server", argv, cwd=env.repo_root, capture_stdout=True,
            log_path=env.path("logs", f"{env.unique(self.key + '-server')}.log"),
        )
        try:
            line = wait_ready_line(child, "READY ")
        except Exception:
            env.procs.stop(child)
            raise
        return ServerHandle(child=child, port=int(line.split()[1]))

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        env = self._env
        server = self.server(None)
        spec = driver_spec(env, workload, ctx, server.port, loop=self.loop)
        return run_driver(env, f"{self.key}-client", CLIENT, spec, server, ctx.timeout_s)


def systems() -> list[AiohttpHttps]:
    """Rows: asyncio and uvloop (the second is a ratio baseline)."""
    return [
        AiohttpHttps("aiohttp", "aiohttp HTTPS", uvloop=False),
        AiohttpHttps("aiohttp-uvloop", "aiohttp HTTPS uvloop", uvloop=True),
    ]
