"""Client-side runtime shared by the Python bench clients (runs inside the client process).

A client module supplies a :class:`Fetcher` factory and calls :func:`main`. Protocol with the
orchestrator over stdin/stdout, so that only the transfer is measured:

1. the client connects and fetches ``warmup`` small objects (handshake, warm connections);
2. it prints ``READY`` and waits for a ``GO`` line on stdin;
3. it resets its own peak RSS, runs the requests with ``concurrency`` in flight and prints
   ``RESULT {json}`` with: bytes and requests completed, ``elapsed_s`` (wall, s), per-request
   ``lat_ms`` (ms), ``cpu_s`` (own utime+stime over the window, s), ``rss_kib`` (VmHWM, KiB),
   ``status`` ("ok", "timeout", "error") and ``error``.

The spec (a JSON file given as argv[1]) holds: host, port, requests ([path, size, start, end]
with an inclusive byte range or nulls), concurrency, deadline_s, warmup_path, warmup,
body_path (write the single body there, for sha256 checks), loop ("asyncio" or "uvloop"),
cafile, and client-specific keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class Req:
    """One GET of ``path``; ``start``/``end`` an inclusive byte range or None; ``size`` bytes."""

    path: str
    size: int
    start: int | None = None
    end: int | None = None

    def range_header(self) -> str | None:
        """The Range header value, or None for a whole-object GET."""
        if self.start is None:
            return None
        return f"bytes={self.start}-{self.end}"


class Fetcher(Protocol):
    """What a client module implements: one client (one connection or one pool)."""

    async def connect(self) -> None:
        """Open the connection(s); may be lazy (the warm-up requests follow)."""

    async def get(self, req: Req, sink: BinaryIO | None) -> int:
        """GET ``req``; write the body to ``sink`` if given; return body length (bytes).

        Raise on a status other than 200 (206 for a range).
        """

    async def close(self) -> None:
        """Close connections."""


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


async def _run(spec: dict[str, Any], fetcher: Fetcher) -> dict[str, Any]:
    reqs = [Req(p, n, s, e) for p, n, s, e in spec["requests"]]
    concurrency = int(spec["concurrency"])
    await fetcher.connect()
    warm = Req(spec["warmup_path"], -1)
    await asyncio.gather(*(fetcher.get(warm, None) for _ in range(int(spec.get("warmup", 1)))))

    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    go = await loop.run_in_executor(None, sys.stdin.readline)
    if go.strip() != "GO":
        raise RuntimeError(f"expected GO, got {go!r}")

    done = {"bytes": 0, "requests": 0}
    lat_ms: list[float] = []
    errors: list[str] = []
    sink: BinaryIO | None = None
    if spec.get("body_path") and len(reqs) == 1:
        sink = open(spec["body_path"], "wb")  # noqa: SIM115 - closed below

    queue: asyncio.Queue[Req] = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)

    async def worker() -> None:
        while not queue.empty():
            r = queue.get_nowait()
            t = time.perf_counter()
            n = await fetcher.get(r, sink)
            lat_ms.append((time.perf_counter() - t) * 1e3)
            if n != r.size:
                errors.append(f"{r.path} {r.range_header() or ''}: {n} bytes, want {r.size}")
            done["bytes"] += n
            done["requests"] += 1

    _reset_hwm()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    status = "ok"
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))),
            timeout=float(spec["deadline_s"]),
        )
    except TimeoutError:
        status = "timeout"
    except Exception as exc:  # reported, not raised: the orchestrator records it
        status = "error"
        errors.append(f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    rss = _vm_hwm_kib()
    if sink is not None:
        sink.close()
    if errors and status == "ok":
        status = "error"
    result = {
        "status": status,
        "error": "; ".join(errors[:3]),
        "bytes": done["bytes"],
        "requests": done["requests"],
        "elapsed_s": elapsed,
        "lat_ms": lat_ms,
        "cpu_s": cpu,
        "rss_kib": rss,
    }
    _emit(result)  # before closing, so that closing is outside the server's window
    return result


def _emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def main(make_fetcher: Callable[[dict[str, Any]], Fetcher]) -> None:
    """Entry point of a client module: ``python -m MODULE SPEC.json``."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)

    async def session() -> None:
        fetcher = make_fetcher(spec)
        try:
            await _run(spec, fetcher)
        finally:
            with contextlib.suppress(Exception):  # best effort once the result is out
                await asyncio.wait_for(fetcher.close(), 5.0)

    factory = None
    if spec.get("loop") == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(session())
    except Exception as exc:
        traceback.print_exc()
        _emit({"status": "error", "error": f"{type(exc).__name__}: {exc}"})
