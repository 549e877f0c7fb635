"""Data model of a bench run: profiles, objects, workloads, samples and cell results.

Units used throughout: sizes in bytes, times in seconds (latencies in milliseconds where the
name says ``_ms``), rates in MB/s with 1 MB = 10**6 bytes, CPU cost in seconds of
utime+stime per GB with 1 GB = 10**9 bytes, memory in KiB (``_kib``) or MiB (``_mib``).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

MiB = 1 << 20
KiB = 1 << 10


@dataclass(frozen=True)
class Profile:
    """Sizes, repetitions and time bounds of one bench profile."""

    name: str
    reps: int
    """Measured repetitions per cell; the cell reports their median."""
    timeout_s: float
    """Bound on one measurement (one repetition of one cell), s."""
    cell_budget_s: float
    """Stop repeating a cell once its measured windows (``Sample.elapsed_s``, without
    set-up) took this long in total, s."""
    big_size: int
    """Object size of workloads (a) and (f), bytes."""
    ranged_size: int
    """Bytes of that object (a prefix; all of it in the full profile) fetched as ranges in (b)."""
    small_count: int
    small_size: int
    epoch_count: int
    epoch_size: int
    impaired_size: int
    """Object size of workload (e), bytes."""
    ranges: int = 8
    concurrency: int = 32
    delay_ms: float = 10.0
    """One-way delay of the impairment proxy in (e), ms."""
    loss: float = 0.01
    """Loss probability each way of the impairment proxy in (e)."""
    capped_datagram: int = 1452
    """UDP payload cap of workload (f), bytes (1500-byte MTU minus IPv4+UDP headers)."""
    epoch_timeout_s: float = 60.0
    """Bound on one measurement of the shard epoch (d), s, when below ``timeout_s``: the full
    epoch (1 GB) needs 17 MB/s to finish in it; a slower system (stock aioquic, about 4.5
    MB/s) reports the rate of the shards it finished by then, as it would at 120 s."""

    def bound_s(self, workload_group: str) -> float:
        """Bound on one measurement of a workload of ``workload_group``, s."""
        if workload_group == "d":
            return min(self.timeout_s, self.epoch_timeout_s)
        return self.timeout_s


FULL = Profile(
    name="full",
    reps=3,
    timeout_s=120.0,
    cell_budget_s=25.0,
    big_size=256 * MiB,
    ranged_size=256 * MiB,
    small_count=1000,
    small_size=4 * KiB,
    epoch_count=1000,
    epoch_size=1 * MiB,
    impaired_size=32 * MiB,
)

QUICK = Profile(
    name="quick",
    reps=1,
    timeout_s=45.0,
    cell_budget_s=45.0,
    big_size=64 * MiB,
    ranged_size=16 * MiB,
    small_count=300,
    small_size=4 * KiB,
    epoch_count=32,
    epoch_size=1 * MiB,
    impaired_size=4 * MiB,
)

PROFILES = {p.name: p for p in (FULL, QUICK)}


@dataclass(frozen=True)
class Obj:
    """One test object as served: URL path (leading slash), size (bytes), sha256 hex."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Request:
    """One GET: ``path``, optional inclusive byte range ``[start, end]``, expected body size."""

    path: str
    size: int
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class Workload:
    """A list of GETs issued on one client with ``concurrency`` in flight."""

    id: str
    """Cell id: a, b, c1, c32, d, e, f."""
    group: str
    """Letter used by ``--workloads``: a, b, c, d, e, f."""
    title: str
    metric: str
    """Headline metric: "MB/s", "req/s" or "ms" (sequential latency p50/p99)."""
    requests: tuple[Request, ...]
    concurrency: int
    big: Obj | None = None
    """The single object fetched, when sha256 verification applies."""
    impaired: bool = False
    max_datagram: int | None = None
    quic_only: bool = False

    @property
    def total_bytes(self) -> int:
        """Body bytes the workload must receive."""
        return sum(r.size for r in self.requests)


@dataclass
class Sample:
    """One measured repetition of one cell (all raw numbers kept in the JSON)."""

    status: str = "ok"
    """"ok", "timeout" or "error"."""
    error: str = ""
    elapsed_s: float = 0.0
    """Wall time of the measured window, s."""
    overhead_s: float = 0.0
    """Part of ``elapsed_s`` that is process start and handshake (CLI clients), s."""
    bytes: int = 0
    requests: int = 0
    lat_ms: list[float] | None = None
    """Per-request latencies, ms, when the client reports them."""
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    client_rss_kib: int | None = None
    server_rss_kib: int | None = None
    server_anon_kib: int | None = None
    """Server tree's RssAnon at the window end, KiB (VmHWM also counts mmapped files)."""
    sha256: str | None = None
    sha256_ok: bool | None = None
    client: str = ""
    """Which client program produced the sample."""

    @property
    def net_s(self) -> float:
        """Transfer time: elapsed minus fixed overhead, s (never below 1 µs)."""
        return max(self.elapsed_s - self.overhead_s, 1e-6)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.lat_ms is not None:
            d["lat_ms"] = [round(x, 4) for x in self.lat_ms]
        return d


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class Cell:
    """Result of one (system, workload) cell: status, samples and their medians."""

    system: str
    workload: str
    status: str = "ok"
    """"ok", "timeout", "error", "n/a" or "skipped"."""
    reason: str = ""
    samples: list[Sample] = field(default_factory=list)
    summary: dict[str, float | None] = field(default_factory=dict)
    verification: Sample | None = None
    """The download written to a file for the sha256 check, before the timed repetitions
    and not among them (a failed one is also the cell's sample, so the cell fails)."""

    def summarize(self, workload: Workload) -> None:
        """Fill ``summary`` with medians over the ok samples (units in the key names)."""
        ok = [s for s in self.samples if s.status == "ok"]
        if not ok:
            partial = [s for s in self.samples if s.status == "timeout" and s.bytes]
            if partial:  # completed responses before the bound: lower bounds
                self.summary = {
                    "partial_mb_per_s": _median([s.bytes / s.net_s / 1e6 for s in partial]),
                    "partial_req_per_s": _median([s.requests / s.net_s for s in partial]),
                }
            return
        gb = workload.total_bytes / 1e9
        self.summary = {
            "mb_per_s": _median([s.bytes / s.net_s / 1e6 for s in ok]),
            "req_per_s": _median([s.requests / s.net_s for s in ok]),
            "client_cpu_s_per_gb": _median(
                [s.client_cpu_s / gb if s.client_cpu_s is not None else None for s in ok]
            ),
            "server_cpu_s_per_gb": _median(
                [s.server_cpu_s / gb if s.server_cpu_s is not None else None for s in ok]
            ),
            "client_rss_mib": _median(
                [s.client_rss_kib / 1024 if s.client_rss_kib else None for s in ok]
            ),
            "server_rss_mib": _median(
                [s.server_rss_kib / 1024 if s.server_rss_kib else None for s in ok]
            ),
            "p50_ms": _median([_pct(s.lat_ms, 0.5) if s.lat_ms else None for s in ok]),
            "p99_ms": _median([_pct(s.lat_ms, 0.99) if s.lat_ms else None for s in ok]),
            "mean_ms": _median([s.net_s * 1e3 / max(s.requests, 1) for s in ok]),
            "reps": float(len(ok)),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "workload": self.workload,
            "status": self.status,
            "reason": self.reason,
            "summary": self.summary,
            "samples": [s.to_json() for s in self.samples],
            "verification": self.verification.to_json() if self.verification else None,
        }
