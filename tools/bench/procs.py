"""Child processes for the bench: spawn, readiness polling, /proc accounting, cleanup by PID.

Units: CPU in seconds (utime + stime), memory in KiB (as /proc reports it), times in seconds.
Everything here is synchronous; the orchestrator runs one measurement at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second used by /proc/<pid>/stat utime and stime."""

_PR_SET_PDEATHSIG = 1
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to SIGTERM this child when the bench process dies (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


# --------------------------------------------------------------------------- ports


def free_port(kind: str = "udp") -> int:
    """A port on 127.0.0.1 that was free a moment ago (``kind`` is "udp" or "tcp")."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(fd_dir / name)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def bound_ports(pids: Iterable[int], kind: str) -> set[int]:
    """Ports on 127.0.0.1 or 0.0.0.0 that ``pids`` hold (UDP bound, or TCP in LISTEN)."""
    inodes = _socket_inodes(pids)
    ports: set[int] = set()
    table = "/proc/net/udp" if kind == "udp" else "/proc/net/tcp"
    with open(table) as f:
        next(f)
        for line in f:
            cols = line.split()
            local, state, inode = cols[1], cols[3], int(cols[9])
            if inode not in inodes:
                continue
            if kind == "tcp" and state != "0A":  # 0A = LISTEN
                continue
            addr, port_hex = local.split(":")
            if addr in ("0100007F", "00000000"):
                ports.add(int(port_hex, 16))
    return ports


# --------------------------------------------------------------------------- /proc stats


def descendants(pid: int) -> list[int]:
    """``pid`` and all of its live descendants (via /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process, all threads (s); 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """One KiB-valued field of /proc/<pid>/status (e.g. "VmHWM", "RssAnon"); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of one live process (KiB); 0 if unknown."""
    return status_kib(pid, "VmHWM")


def reset_hwm(pid: int) -> None:
    """Reset VmHWM of ``pid`` to its current RSS (writes 5 to /proc/<pid>/clear_refs)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# --------------------------------------------------------------------------- registry


@dataclass
class Child:
    """One child process with a line queue over its stdout (when captured)."""

    label: str
    popen: subprocess.Popen[bytes]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    log_path: Path | None = None
    rusage: object | None = None  # resource.struct_rusage once reaped by wait4
    status: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process has not been reaped."""
        if self.status is not None:
            return False
        return not self.wait4(0.0)

    def read_line(self, timeout: float) -> str | None:
        """Next stdout line (stripped), or None on EOF or timeout (s)."""
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def wait4(self, timeout: float) -> bool:
        """Reap the child with os.wait4, keeping its rusage; False on timeout (s)."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == self.pid:
                self.status = status
                self.rusage = rusage
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


class Registry:
    """Every process the bench starts, so each can be ended by its own PID."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def spawn(
        self,
        label: str,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        capture_stdout: bool = False,
        stdin_pipe: bool = False,
    ) -> Child:
        """Start ``argv``; stderr (and stdout unless captured) go to ``log_path``."""
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture_stdout else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        child = Child(label=label, popen=popen, log_path=log_path)
        self.children.append(child)
        if capture_stdout:
            threading.Thread(target=_pump, args=(popen, child.lines), daemon=True).start()
        return child

    def stop(self, child: Child, grace: float = 3.0) -> None:
        """SIGTERM ``child`` by PID, then SIGKILL after ``grace`` seconds; reap it."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
            if not child.wait4(grace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.wait4(grace)
        if child.popen.stdin is not None:  # stdout belongs to the pump thread until EOF
            with contextlib.suppress(OSError):
                child.popen.stdin.close()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        """Stop every child still registered, newest first."""
        for child in reversed(list(self.children)):
            self.stop(child)


def _pump(popen: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
    assert popen.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for raw in popen.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    lines.put(None)


def wait_listening(child: Child, port: int, kind: str, timeout: float = 20.0) -> None:
    """Poll until ``child`` (or a descendant) holds ``port``; raise if it dies or times out."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.label} exited early (see {child.log_path})")
        if port in bound_ports(descendants(child.pid), kind):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise TimeoutError(f"{child.label} did not listen on {kind} {port} within {timeout:.0f} s")


def wait_ready_line(child: Child, prefix: str, timeout: float = 20.0) -> str:
    """Read stdout lines until one starts with ``prefix``; return it (raises on EOF/timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        line = child.read_line(deadline - time.monotonic())
        if line is None:
            raise RuntimeError(f"{child.label} gave no {prefix!r} line (see {child.log_path})")
        if line.startswith(prefix):
            return line
