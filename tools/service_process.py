"""A local HTTP service process for tests and benchmarks (Azurite, moto's S3 server): started
on 127.0.0.1 on a free port in a process group of its own, waited for until it answers HTTP
(polled, bounded by a deadline), and stopped by its PID.

    proc, port = start_http_service(lambda port: [binary, "--port", str(port)], log,
                                    probe_path="/", timeout=30.0, name="my server")
    ...
    stop_process_group(proc)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_ATTEMPTS = 3
"""Ports tried before giving up (the free port probed may be taken before the service
binds it)."""


class ServiceDidNotStart(RuntimeError):
    """The service exited, or did not answer HTTP in time, on every port tried."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_http(port: int, path: str) -> bool:
    """Whether an HTTP server answers a GET of ``path`` on 127.0.0.1:``port`` (any
    status) within a second."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            conn.getresponse().read()
            return True
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to the process group ``proc`` leads (started by us with a session of its
    own: the service and nothing else), SIGKILL after ``timeout`` s. Nothing if it already
    exited."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def start_http_service(
    command: Callable[[int], list[str]],
    log: Path,
    *,
    probe_path: str,
    timeout: float,
    name: str,
) -> tuple[subprocess.Popen[bytes], int]:
    """``(process, port)`` of ``command(port)`` started on a free port, its output appended
    to ``log``, once it answers a GET of ``probe_path`` (polled, bounded by ``timeout`` s);
    another port if it exits or stays silent (the probed port may have been taken
    meanwhile). ServiceDidNotStart ("``name`` did not start: <end of the log>") after
    START_ATTEMPTS ports."""
    last = ""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                command(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline and proc.poll() is None:
            if answers_http(port, probe_path):
                return proc, port
            time.sleep(delay)  # polling interval, not synchronisation
            delay = min(delay * 2, 0.2)
        stop_process_group(proc)
        last = log.read_text(errors="replace")[-500:]
    raise ServiceDidNotStart(f"{name} did not start: {last}")
