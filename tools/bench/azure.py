"""The quicstore gateway over Azure Blob storage against the Azure SDK reading the same blob
directly, in one run: ``python -m tools.bench.azure [--quick]``.

Everything runs on 127.0.0.1: one Azurite (tools/azurite.py), one ``quicstore serve --store
azure`` gateway over it (uvloop), and one client process per measurement. A deterministic
object (64 MiB; 16 MiB with ``--quick``) and the 4 KiB warm-up object are uploaded once
through the gateway (``quicstore put``), so the blobs carry quicstore's metadata; every row
then reads those same blobs:

- ``gateway``: the quicstore SDK client (tools.bench.clients.quicstore: fan-out GETs with
  adaptive prefetch, CRC32C of every block checked) -> gateway -> Azurite;
- ``sdk``: ``azure.storage.blob.aio`` straight from Azurite, ``max_concurrency`` 4 and 8 MiB
  GETs (``--sdk-concurrency``, ``--sdk-get-mib``; chosen by a short sweep, see
  tools/bench/README.md);
- ``sdk-defaults``: the same SDK with its own defaults (``max_concurrency`` 1, a first GET of
  up to 32 MiB, then 4 MiB chunks).

Workloads: ``whole`` (the object read whole, 4 times in turn) and ``range`` (its middle 8 MiB,
8 times in turn): one request at a time, repeated only so that the window is long enough for
/proc's 10 ms CPU ticks. Before the measured repetitions each row reads each workload once,
unmeasured, into a file whose sha256 is compared with the expected bytes (also a warm-up);
then the rows take turns, repetition by repetition. Every measurement is bounded
(``--timeout``) and no repetition starts once the run's budget (``--budget``) is spent.

Measured per sample (tools.bench.driver's READY/GO window): MB/s (10^6 B/s), the client's
CPU, the gateway's process tree CPU and Azurite's process CPU over the same window (s/GB,
10^9 B), Azurite's CPU as a share of one core (it is one Node.js process: near 100 % it is
the limit), peak RSS of client and gateway. Tables on stdout, progress on stderr, every raw
sample in ``bench-results/bench-azure-<profile>-<UTC>.json`` (and ``.md``).

Only processes this run started are stopped, by PID (Azurite by its own process group);
the scratch dir (tmpfs when there is room) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.azurite import VERSION as AZURITE_VERSION
from tools.azurite import Azurite, AzuriteUnavailable
from tools.bench.cli import interrupt_on_sigterm, load_average, log_progress, write_results
from tools.bench.model import FULL, QUICK, Cell, MiB, Obj, Request, Sample, Workload
from tools.bench.objects import ObjectSet, write_certificate
from tools.bench.procs import Child, Registry, wait_ready_line
from tools.bench.runner import check
from tools.bench.systems.base import BenchEnv, RunContext, ServerHandle, driver_spec, run_driver

REPO_ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "2025-11-05"
"""REST API version the SDK client sends (quicstore.store.azure.API_VERSION: Azurite 3.35
rejects the SDK's newer default)."""
BUCKET = "bench"
"""quicstore bucket, and so Azure container (no prefix), of the objects."""
RANGE_SIZE = 8 * MiB
"""Bytes of the ``range`` workload (the middle of the object)."""
UPLOAD_TIMEOUT = 120.0
"""Seconds one ``quicstore put`` may take."""


@dataclass(frozen=True)
class AzProfile:
    """Sizes and bounds of one run."""

    name: str
    size: int
    """Object size, bytes."""
    reps: int
    """Measured repetitions per row and workload (the table shows their median)."""
    timeout_s: float
    """Bound on one measurement, s."""
    budget_s: float
    """No repetition starts after this many seconds of measuring, s."""
    whole_reads: int = 4
    """Whole-object GETs in one measurement of ``whole``."""
    range_reads: int = 8
    """Range GETs in one measurement of ``range``."""


PROFILES = {
    "full": AzProfile("full", 64 * MiB, reps=3, timeout_s=60.0, budget_s=240.0),
    "quick": AzProfile("quick", 16 * MiB, reps=3, timeout_s=30.0, budget_s=75.0),
}


@dataclass(frozen=True)
class Row:
    """One row of the table: a client module and where it reads from."""

    key: str
    name: str
    module: str
    via_gateway: bool
    spec: dict[str, Any] = field(default_factory=dict)
    """Client-specific spec keys (tools.bench.driver passes them to the client)."""


def rows(sdk_concurrency: int, sdk_get_mib: int) -> list[Row]:
    """The gateway row, then the SDK's tuned and default rows."""
    tuned = f"max_concurrency={sdk_concurrency}, {sdk_get_mib} MiB GETs"
    return [
        Row(
            "gateway",
            "quicstore client -> gateway -> Azurite",
            "tools.bench.clients.quicstore",
            True,
        ),
        Row(
            "sdk",
            f"Azure SDK aio -> Azurite ({tuned})",
            "tools.bench.clients.azure_sdk",
            False,
            {
                "max_concurrency": sdk_concurrency,
                "get_size": sdk_get_mib * MiB,
                "warmup": sdk_concurrency,
            },
        ),
        Row(
            "sdk-defaults",
            "Azure SDK aio -> Azurite (SDK defaults: max_concurrency=1)",
            "tools.bench.clients.azure_sdk",
            False,
            {"max_concurrency": 1, "get_size": None},
        ),
    ]


def workloads(objects: ObjectSet, prof: AzProfile) -> list[Workload]:
    """``whole``: the object read whole ``whole_reads`` times; ``range``: its middle
    ``RANGE_SIZE`` bytes read ``range_reads`` times. One request at a time, so the rate is
    that of a single GET; the repeats only make the measured window long enough for /proc's
    10 ms CPU ticks. ``Workload.big`` holds the expected sha256 of one body."""
    big = objects.big
    length = min(RANGE_SIZE, big.size)
    start = (big.size - length) // 2
    with open(objects.root / big.path.lstrip("/"), "rb") as f:
        f.seek(start)
        middle = hashlib.sha256(f.read(length)).hexdigest()
    whole = Request(big.path, big.size)
    ranged = Request(big.path, length, start, start + length - 1)
    mib = big.size // MiB
    return [
        Workload(
            "whole",
            "whole",
            f"{prof.whole_reads} x whole {mib} MiB object, in turn",
            "MB/s",
            (whole,) * prof.whole_reads,
            1,
            big=big,
        ),
        Workload(
            "range",
            "range",
            f"{prof.range_reads} x {length // MiB} MiB range (bytes {start}-"
            f"{start + length - 1}), in turn",
            "MB/s",
            (ranged,) * prof.range_reads,
            1,
            big=Obj(big.path, length, middle),
        ),
    ]


class Sides(ServerHandle):
    """The server side of one measurement: Azurite's process (its CPU and RSS go to
    ``azurite``) and, for the gateway row, the gateway's process tree (into the sample's
    ``server_*`` fields)."""

    def __init__(self, azurite: Child, gateway: ServerHandle | None) -> None:
        super().__init__(child=azurite, port=0)
        self.gateway = gateway
        self.azurite = Sample()

    def begin(self) -> None:
        super().begin()
        if self.gateway is not None:
            self.gateway.begin()

    def end(self, sample: Sample) -> None:
        if self.gateway is not None:
            self.gateway.end(sample)
        self.azurite = Sample()
        super().end(self.azurite)


@dataclass
class Measured:
    """One sample plus Azurite's CPU over its window."""

    row: str
    workload: str
    sample: Sample
    azurite_cpu_s: float | None
    verify: bool = False
    """An unmeasured verification pass (not in the medians)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "workload": self.workload,
            "verify": self.verify,
            "azurite_cpu_s": self.azurite_cpu_s,
            **self.sample.to_json(),
        }


class Procs(Registry):
    """The framework's registry that also closes a stopped child's stdout pipe (at EOF once
    the child is reaped), rather than leaving it to the garbage collector."""

    def stop(self, child: Child, grace: float = 3.0) -> None:
        super().stop(child, grace)
        out = child.popen.stdout
        if out is not None and not child.alive():
            with contextlib.suppress(OSError, ValueError):
                out.close()


class Run:
    """Azurite, the gateway and the objects of one run; :meth:`measure` runs one client."""

    def __init__(self, env: BenchEnv, azurite: Azurite) -> None:
        self.env = env
        self.azurite = azurite
        self.azurite_child = Child(label="azurite", popen=azurite.proc)
        self.gateway: ServerHandle | None = None
        self.upload_s: dict[str, float] = {}

    def start_gateway(self) -> ServerHandle:
        """``quicstore serve --store azure`` on 127.0.0.1 (the connection string in its
        environment, out of ``ps``), once it prints its listening line."""
        env = self.env
        argv = [
            env.python,
            "-m",
            "quicstore",
            "serve",
            "--root",
            str(env.path("gateway", "root")),
            "--listen",
            "127.0.0.1:0",
            "--open",
            "--store",
            "azure",
            "--cert",
            str(env.cert),
            "--key",
            str(env.key),
        ]
        child = env.procs.spawn(
            "gateway",
            argv,
            cwd=env.repo_root,
            capture_stdout=True,
            env={**os.environ, "QUICSTORE_AZURE_CONNECTION_STRING": self.azurite.connection_string},
            log_path=env.path("logs", "gateway.log"),
        )
        line = wait_ready_line(child, "quicstore gateway listening", timeout=30.0)
        port = int(line.split("quicstore://", 1)[1].split()[0].rsplit(":", 1)[1])
        self.gateway = ServerHandle(child=child, port=port)
        return self.gateway

    def upload(self) -> None:
        """``quicstore put`` the warm-up object and the big one through the gateway."""
        env, gateway = self.env, self.gateway
        assert gateway is not None
        for obj in (env.objects.warmup, env.objects.big):
            rel = obj.path.lstrip("/")
            url = f"quicstore://127.0.0.1:{gateway.port}/{BUCKET}/{rel}"
            argv = [
                env.python,
                "-m",
                "quicstore",
                "put",
                "-q",
                str(env.objects.root / rel),
                url,
                "--ca",
                str(env.cert),
            ]
            log = env.path("logs", f"{env.unique('put')}.log")
            t = time.monotonic()
            child = env.procs.spawn("put", argv, cwd=env.repo_root, log_path=log)
            if not child.wait4(UPLOAD_TIMEOUT):
                env.procs.stop(child)
                raise RuntimeError(f"uploading {rel} took over {UPLOAD_TIMEOUT:.0f} s")
            env.procs.stop(child, grace=0.0)
            if child.popen.returncode != 0:
                raise RuntimeError(f"uploading {rel} failed: {log.read_text()[-300:]}")
            self.upload_s[rel] = time.monotonic() - t

    def measure(self, row: Row, wl: Workload, timeout_s: float, verify: bool) -> Measured:
        """One client run of ``wl``, with Azurite's and (gateway row) the gateway's CPU over
        the window; with ``verify``, one request of it only, its body written to tmpfs and
        its sha256 checked."""
        env = self.env
        if verify:
            wl = dataclasses.replace(wl, requests=wl.requests[:1])
        gateway = self.gateway if row.via_gateway else None
        if row.via_gateway and gateway is None:
            raise RuntimeError("the gateway is not running")
        vpath = env.path("verify", f"{env.unique(row.key)}.bin") if verify else None
        ctx = RunContext(rep=0, timeout_s=timeout_s, verify_path=vpath)
        port = gateway.port if gateway is not None else self.azurite.port
        extra: dict[str, Any] = {"loop": "uvloop", "bucket": BUCKET}
        if not row.via_gateway:
            extra |= {
                "connection_string": self.azurite.connection_string,
                "container": BUCKET,
                "api_version": API_VERSION,
            }
        spec = driver_spec(env, wl, ctx, port, **extra, **row.spec)
        sides = Sides(self.azurite_child, gateway)
        try:
            sample = run_driver(env, row.key, row.module, spec, sides, timeout_s)
        except Exception as exc:
            sample = Sample(status="error", error=f"{type(exc).__name__}: {exc}")
        check(sample, wl, ctx)
        if vpath is not None:
            vpath.unlink(missing_ok=True)
        return Measured(row.key, wl.id, sample, sides.azurite.server_cpu_s, verify=verify)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(cell: Cell, wl: Workload, measured: list[Measured]) -> None:
    """Fill ``cell`` from its measured samples: the framework's medians plus Azurite's CPU
    (s/GB, and as a share of one core over the window)."""
    cell.samples = [m.sample for m in measured]
    cell.summarize(wl)
    ok = [m for m in measured if m.sample.status == "ok"]
    if not ok:
        bad = [m.sample for m in measured if m.sample.status != "ok"]
        if bad and cell.status == "ok":
            cell.status, cell.reason = bad[0].status, bad[0].error
        elif not measured and cell.status == "ok":
            cell.status = "skipped"
        return
    gb = wl.total_bytes / 1e9
    cell.summary["azurite_cpu_s_per_gb"] = _median(
        [m.azurite_cpu_s / gb if m.azurite_cpu_s is not None else None for m in ok]
    )
    cell.summary["azurite_core_share"] = _median(
        [m.azurite_cpu_s / m.sample.net_s if m.azurite_cpu_s is not None else None for m in ok]
    )
    if len(ok) < len(measured):
        cell.reason = f"{len(measured) - len(ok)} of {len(measured)} reps failed"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(rows_: list[Row], wls: list[Workload], cells: dict[tuple[str, str], Cell]) -> str:
    """The main table (one line per row and workload) and the ratio table."""
    out = [
        "| workload | row | MB/s | CPU s/GB client | CPU s/GB gateway | CPU s/GB Azurite "
        "| Azurite CPU, % of a core | peak RSS MiB client/gateway | reps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for wl in wls:
        for row in rows_:
            cell = cells.get((row.key, wl.id))
            if cell is None:
                continue
            s = cell.summary
            if "mb_per_s" not in s:
                out.append(
                    f"| {wl.title} | {row.name} | {cell.status}: {cell.reason[:80]} | | | | | | |"
                )
                continue
            share = s.get("azurite_core_share")
            rss = f"{_fmt(s.get('client_rss_mib'), 0)}/" + (
                _fmt(s.get("server_rss_mib"), 0) if row.via_gateway else "-"
            )
            out.append(
                f"| {wl.title} | {row.name} | {_fmt(s['mb_per_s'])} "
                f"| {_fmt(s.get('client_cpu_s_per_gb'), 2)} "
                f"| {_fmt(s.get('server_cpu_s_per_gb'), 2) if row.via_gateway else '-'} "
                f"| {_fmt(s.get('azurite_cpu_s_per_gb'), 2)} "
                f"| {_fmt(share * 100 if share is not None else None, 0)} "
                f"| {rss} | {_fmt(s.get('reps'), 0)} |"
            )
    gateway = next((r for r in rows_ if r.via_gateway), None)
    sdks = [r for r in rows_ if not r.via_gateway]
    if gateway is None or not sdks:
        return "\n".join(out)
    out += [
        "",
        "Ratio gateway / direct SDK (MB/s; CPU s/GB of client + gateway against the SDK "
        "client's; CPU s/GB of everything, Azurite included):",
        "",
        "| workload | against | MB/s | CPU s/GB without Azurite | CPU s/GB with Azurite |",
        "|---|---|---|---|---|",
    ]
    for wl in wls:
        g = cells.get((gateway.key, wl.id))
        for sdk in sdks:
            d = cells.get((sdk.key, wl.id))
            if g is None or d is None or "mb_per_s" not in g.summary or "mb_per_s" not in d.summary:
                out.append(f"| {wl.title} | {sdk.key} | - | - | - |")
                continue
            gs, ds = g.summary, d.summary
            mine = _sum(gs, "client_cpu_s_per_gb", "server_cpu_s_per_gb")
            theirs = _sum(ds, "client_cpu_s_per_gb")
            mine_all = _sum(
                gs, "client_cpu_s_per_gb", "server_cpu_s_per_gb", "azurite_cpu_s_per_gb"
            )
            theirs_all = _sum(ds, "client_cpu_s_per_gb", "azurite_cpu_s_per_gb")
            out.append(
                f"| {wl.title} | {sdk.key} | {_ratio(gs['mb_per_s'], ds['mb_per_s'])} "
                f"| {_ratio(mine, theirs)} | {_ratio(mine_all, theirs_all)} |"
            )
    return "\n".join(out)


def _sum(summary: dict[str, float | None], *keys: str) -> float | None:
    values = [summary.get(k) for k in keys]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _workdir(arg: str | None) -> Path:
    parent: Path | None = Path(arg) if arg else None
    if parent is None:
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
            parent = shm
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="quicstore-bench-azure-", dir=parent))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench.azure", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="16 MiB object (< 2 minutes)")
    p.add_argument("--reps", type=int, help="measured repetitions per row and workload")
    p.add_argument("--timeout", type=float, help="bound on one measurement, s")
    p.add_argument("--budget", type=float, help="no repetition starts after this, s")
    p.add_argument(
        "--sdk-concurrency",
        type=int,
        default=4,
        help="max_concurrency of the 'sdk' row (default 4)",
    )
    p.add_argument(
        "--sdk-get-mib",
        type=int,
        default=8,
        help="GET size of the 'sdk' row, MiB (first GET and chunks; default 8)",
    )
    p.add_argument(
        "--out-dir",
        default=str(REPO_ROOT / "bench-results"),
        help="where the JSON and markdown go (default: bench-results/)",
    )
    p.add_argument("--json", help="exact JSON output path (overrides --out-dir naming)")
    p.add_argument("--workdir", help="parent of the scratch dir (default: /dev/shm or /tmp)")
    p.add_argument("--seed", type=int, default=1, help="seed of the object bytes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prof = PROFILES["quick" if args.quick else "full"]
    prof = dataclasses.replace(
        prof,
        reps=args.reps or prof.reps,
        timeout_s=args.timeout or prof.timeout_s,
        budget_s=args.budget or prof.budget_s,
    )
    if prof.reps < 1 or args.sdk_concurrency < 1 or args.sdk_get_mib < 1:
        raise SystemExit("--reps, --sdk-concurrency and --sdk-get-mib must be positive")
    table_rows = rows(args.sdk_concurrency, args.sdk_get_mib)

    interrupt_on_sigterm()
    started = datetime.datetime.now(datetime.UTC)
    load_before = load_average()
    t0 = time.monotonic()
    workdir = _workdir(args.workdir)
    procs = Procs()
    azurite: Azurite | None = None
    measured: list[Measured] = []
    cells: dict[tuple[str, str], Cell] = {}
    wls: list[Workload] = []
    run: Run | None = None
    interrupted = False
    failure = ""
    try:
        log_progress(f"profile {prof.name}; work dir {workdir}")
        cert, key = write_certificate(workdir / "certs")
        # The framework's profile with only the objects this run reads (the big one and
        # the warm-up object; the others are made empty).
        base = dataclasses.replace(
            QUICK if args.quick else FULL,
            big_size=prof.size,
            small_count=0,
            epoch_count=0,
            impaired_size=0,
            timeout_s=prof.timeout_s,
        )
        objects = ObjectSet.generate(workdir / "objects", base, seed=args.seed)
        wls = workloads(objects, prof)
        env = BenchEnv(
            workdir=workdir,
            objects=objects,
            cert=cert,
            key=key,
            profile=base,
            procs=procs,
            cache_dir=Path(args.out_dir) / ".cache",
            repo_root=REPO_ROOT,
        )
        azurite = Azurite.launch(workdir / "azurite")
        log_progress(f"azurite {AZURITE_VERSION} pid {azurite.pid} on 127.0.0.1:{azurite.port}")
        run = Run(env, azurite)
        gateway = run.start_gateway()
        log_progress(f"gateway pid {gateway.child.pid} on udp 127.0.0.1:{gateway.port}")
        run.upload()
        log_progress(
            "uploaded through the gateway: "
            + ", ".join(f"{k} in {v:.2f} s" for k, v in run.upload_s.items())
        )
        for wl in wls:
            for row in table_rows:
                cells[(row.key, wl.id)] = Cell(row.key, wl.id)
        measure_t0 = time.monotonic()
        for wl in wls:
            for row in table_rows:  # verification and warm-up pass, unmeasured
                m = run.measure(row, wl, prof.timeout_s, verify=True)
                measured.append(m)
                log_progress(f"{row.key} {wl.id} verify: {_describe(m)}")
                if m.sample.status != "ok":
                    cell = cells[(row.key, wl.id)]
                    cell.status, cell.reason = "error", f"verification: {m.sample.error}"
            for rep in range(prof.reps):
                if time.monotonic() - measure_t0 > prof.budget_s:
                    log_progress(f"budget of {prof.budget_s:.0f} s spent: no more repetitions")
                    break
                for row in table_rows:
                    if cells[(row.key, wl.id)].status != "ok":
                        continue
                    m = run.measure(row, wl, prof.timeout_s, verify=False)
                    measured.append(m)
                    log_progress(f"{row.key} {wl.id} rep {rep + 1}: {_describe(m)}")
    except KeyboardInterrupt:
        interrupted = True
        log_progress("interrupted: stopping what this run started")
    except (AzuriteUnavailable, RuntimeError, TimeoutError, OSError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
        log_progress(f"failed: {failure}")
    finally:
        procs.stop_all()
        if azurite is not None:
            azurite.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - t0

    for wl in wls:
        for row in table_rows:
            found = cells.get((row.key, wl.id))
            if found is not None:
                summarize(
                    found,
                    wl,
                    [
                        m
                        for m in measured
                        if m.row == row.key and m.workload == wl.id and not m.verify
                    ],
                )
    table = render(table_rows, wls, cells) if cells else ""
    print(table)
    print(
        f"\nprofile {prof.name}: {duration:.1f} s; load average {load_before} before, "
        f"{load_average()} after"
        + (" (interrupted)" if interrupted else "")
        + (f" (failed: {failure})" if failure else "")
    )
    doc = {
        "tool": "tools.bench.azure",
        "started_utc": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 3),
        "interrupted": interrupted,
        "failure": failure,
        "profile": dataclasses.asdict(prof),
        "host": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "azurite": AZURITE_VERSION,
            "loadavg_before": load_before,
            "loadavg_after": load_average(),
        },
        "units": {
            "mb_per_s": "10**6 bytes per second",
            "cpu_s_per_gb": "utime+stime seconds per 10**9 bytes",
            "azurite_core_share": "Azurite CPU seconds / window seconds",
        },
        "rows": [dataclasses.asdict(r) for r in table_rows],
        "workloads": [{"id": w.id, "title": w.title, "total_bytes": w.total_bytes} for w in wls],
        "upload_s": run.upload_s if run is not None else {},
        "cells": [  # samples below, with Azurite's CPU
            {k: v for k, v in c.to_json().items() if k != "samples"} for c in cells.values()
        ],
        "samples": [m.to_json() for m in measured],
        "table_markdown": table,
    }
    write_results(doc, table, args.json, args.out_dir, f"bench-azure-{prof.name}", started)
    if interrupted:
        return 130
    return 1 if failure else 0


def _describe(m: Measured) -> str:
    s = m.sample
    if s.status != "ok":
        return f"{s.status}: {s.error}"[:200]
    share = f", Azurite {m.azurite_cpu_s / s.net_s:.0%} of a core" if m.azurite_cpu_s else ""
    sha = " sha256 ok" if s.sha256_ok else ""
    return f"{s.bytes / s.net_s / 1e6:,.1f} MB/s in {s.elapsed_s:.2f} s{share}{sha}"


if __name__ == "__main__":
    sys.exit(main())
