"""A gateway in its own process, for tests that kill it or drive it through the CLI."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

READY = re.compile(r"listening on quicstore://([^:\s]+):(\d+)")
QUICSTORE = [sys.executable, "-m", "quicstore"]


class GatewayProcess:
    """``quicstore serve`` as a child process; readiness from its ready line."""

    def __init__(
        self,
        root: Path,
        *,
        port: int = 0,
        extra: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before exec (e.g. to set resource limits)."""
        self.root = root
        self.port = port
        self.extra = extra or []
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        """Everything the gateway printed (read continuously by a thread)."""
        self._drain: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.proc = subprocess.Popen(
            [
                *QUICSTORE,
                "serve",
                "--root",
                str(self.root),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                # Keep reading: a gateway that logs into a full pipe blocks on the write
                # (1,000 dropped-connection lines fill the 64 KiB pipe buffer).
                self._drain = threading.Thread(target=self._read_output, daemon=True)
                self._drain.start()
                return self
        self.kill()
        raise RuntimeError("gateway did not start:\n" + "".join(self.output))

    def _read_output(self) -> None:
        stdout = self.proc.stdout if self.proc is not None else None
        if stdout is None:
            return
        with contextlib.suppress(ValueError, OSError):  # closed by kill()/stop()
            for line in stdout:
                self.output.append(line)

    def _close_output(self) -> None:
        drain, self._drain = self._drain, None
        stdout = self.proc.stdout if self.proc is not None else None
        if drain is not None:
            drain.join(timeout=10)  # EOF once the gateway (and any worker) has exited
        elif stdout is not None and not stdout.closed:
            self.output.extend(stdout.readlines())
        if stdout is not None:
            stdout.close()

    @property
    def url(self) -> str:
        return f"quicstore://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.root / ".quicstore" / "cert.pem"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_output()

    def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_output()
        return self.proc.returncode

    def peak_rss_kib(self) -> int:
        """VmHWM of the process (peak resident set), KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")
