"""nginx (Debian) over HTTPS/TCP: a temporary nginx.conf in the work dir, one worker process,
``sendfile on`` (TLS without kTLS still encrypts in userspace), HTTP/1.1, TLS 1.2/1.3.

Clients: curl for (a) (time = curl's ``time_total`` minus ``time_appconnect``, i.e. without
process start and handshake; CPU and peak RSS of the whole curl process); an aiohttp
ClientSession on uvloop (tools.bench.clients.aiohttp_https) for (b), (c) and (d).
"""

from __future__ import annotations

import shutil

from tools.bench.model import Sample, Workload
from tools.bench.procs import free_port, wait_listening
from tools.bench.systems.base import (
    BenchEnv,
    ManagedSystem,
    RunContext,
    ServerHandle,
    driver_spec,
    run_cli,
    run_driver,
)

CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
        location / {{ }}
    }}
}}
"""

AIOHTTP_CLIENT = "tools.bench.clients.aiohttp_https"
CURL_FORMAT = "%{http_code} %{size_download} %{time_appconnect} %{time_total}\\n"


def _nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/bin")


class Nginx(ManagedSystem):
    """nginx HTTPS with curl (a) and aiohttp+uvloop (b, c, d) clients."""

    key = "nginx"
    family = "nginx"
    name = "nginx HTTPS"
    protocol = "tcp"
    notes = (
        "nginx 1 worker, sendfile on; client curl for (a), aiohttp+uvloop for (b)/(c)/(d) "
        "(HTTP/1.1: N in flight = N TLS connections)"
    )

    def setup(self, env: BenchEnv) -> None:
        if not _nginx() or not shutil.which("curl"):
            raise RuntimeError("nginx/curl not installed (python -m tools.bench --install)")
        super().setup(env)

    def start_server(self, config: object) -> ServerHandle:
        env = self._env
        port = free_port("tcp")
        d = env.workdir / "nginx"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(
            CONF.format(dir=d, port=port, cert=env.cert, key=env.key, root=env.objects.root)
        )
        argv = [_nginx() or "nginx", "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")]
        child = env.procs.spawn(
            "nginx", argv, cwd=d, log_path=env.path("logs", f"{env.unique('nginx')}.log")
        )
        try:
            wait_listening(child, port, "tcp")
        except Exception:
            env.procs.stop(child)
            raise
        return ServerHandle(child=child, port=port)

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        env = self._env
        server = self.server(None)
        if len(workload.requests) == 1 and workload.requests[0].start is None:
            req = workload.requests[0]
            out = str(ctx.verify_path) if ctx.verify_path else "/dev/null"
            argv = [
                shutil.which("curl") or "curl", "-sS", "--cacert", str(env.cert), "-o", out,
                "-w", CURL_FORMAT, f"https://127.0.0.1:{server.port}{req.path}",
            ]  # fmt: skip
            run = run_cli(env, "curl", argv, server, ctx.timeout_s)
            sample = run.sample
            if sample.status == "ok" and run.stdout:
                code, size, t_conn, t_total = run.stdout[-1].split()
                if code != "200":
                    sample.status, sample.error = "error", f"HTTP status {code}"
                sample.bytes, sample.requests = int(size), 1
                sample.elapsed_s, sample.overhead_s = float(t_total), float(t_conn)
            return sample
        spec = driver_spec(env, workload, ctx, server.port, loop="uvloop")
        return run_driver(env, "nginx-aiohttp-client", AIOHTTP_CLIENT, spec, server,
                          ctx.timeout_s)


def systems() -> list[Nginx]:
    """One row."""
    return [Nginx()]
