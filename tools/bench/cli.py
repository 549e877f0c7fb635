"""Command line of the bench: ``python -m tools.bench [--quick] [--systems ..] [--workloads ..]``.

Runs every selected system side by side on 127.0.0.1, prints the markdown tables and writes
``bench-<profile>-<UTC time>.json`` (all raw numbers) and ``.md`` to ``--out-dir``.
``--install`` sets up a fresh machine (apt and pip); ``--list`` shows systems and workloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench import aioquic_examples
from tools.bench.model import PROFILES, Cell
from tools.bench.objects import ObjectSet, build_workloads, write_certificate
from tools.bench.procs import Registry
from tools.bench.report import render
from tools.bench.runner import run_interleaved, run_system
from tools.bench.systems import load_all
from tools.bench.systems.base import BenchEnv, System

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APT_PACKAGES = ["ngtcp2-client", "ngtcp2-server", "nginx", "curl"]
WORKLOAD_GROUPS = "abcdef"


def log_progress(msg: str, t0: float = time.monotonic()) -> None:
    """``msg`` on stderr, after the seconds since the bench modules were imported."""
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so that a terminated run cleans up (stops
    what it started, keeps its partial results) as after Ctrl-C."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def install() -> int:
    """apt-get install the reference peers and pip install requirements.txt; exit code."""
    steps: list[list[str]] = []
    if os.geteuid() == 0:
        steps.append(["apt-get", "update", "-qq"])
        steps.append(["apt-get", "install", "-y", "-qq", *APT_PACKAGES])
    else:
        print(f"not root: install {' '.join(APT_PACKAGES)} with apt-get yourself",
              file=sys.stderr)
    steps.append([sys.executable, "-m", "pip", "install", "-q", "-r",
                  str(HERE / "requirements.txt")])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in steps:
        print("+ " + " ".join(argv), file=sys.stderr, flush=True)
        if subprocess.run(argv, env=env).returncode != 0:
            return 1
    cache = REPO_ROOT / "bench-results" / ".cache"
    print(f"aioquic examples: {aioquic_examples.examples_dir(cache)}", file=sys.stderr)
    return 0


def _select(systems: list[System], spec: str | None) -> list[System]:
    """The systems ``--systems`` names (keys, families, ``=key`` for one key alone); with
    none named, every system but the optional ones (extra variants a full run would spend
    minutes on; named by key or family they run)."""
    if not spec:
        return [s for s in systems if not getattr(s, "optional", False)]
    wanted = [w.strip().lower() for w in spec.split(",") if w.strip()]
    exact = {w[1:] for w in wanted if w.startswith("=")}
    wanted = [w for w in wanted if not w.startswith("=")]
    known = {s.key for s in systems} | {s.family for s in systems}
    unknown = [w for w in wanted if w not in known] + [
        "=" + w for w in exact if w not in {s.key for s in systems}
    ]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {sorted(known)}")
    return [s for s in systems if s.key in wanted or s.family in wanted or s.key in exact]


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def write_results(
    doc: dict[str, Any],
    table: str,
    json_arg: str | None,
    out_dir: str,
    stem: str,
    started: datetime.datetime,
) -> Path:
    """Write a run's JSON ``doc`` and, next to it with ``.md``, its markdown ``table``: to
    ``json_arg`` if given (``--json``), else ``<out_dir>/<stem>-<started, UTC>.json``.
    Returns the JSON file's path (also said on stderr)."""
    if json_arg:
        json_path = Path(json_arg)
    else:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        json_path = Path(out_dir) / f"{stem}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1))
    json_path.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {json_path}", file=sys.stderr)
    return json_path


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), "?" if unknown."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _host_info() -> dict[str, Any]:
    from importlib import metadata

    pkgs = {}
    for name in ("aioquic", "aiohttp", "uvloop", "starlette", "cryptography"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       "")
    except OSError:
        pass
    dpkg = ["dpkg-query", "-W", "-f", "${Version}"]
    return {
        "loadavg_after": load_average(),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": pkgs,
        "ngtcp2": _tool_version([*dpkg, "ngtcp2-server"]),
        "nginx": _tool_version([*dpkg, "nginx"]),
        "curl": _tool_version(["curl", "--version"]),
    }


def _workdir(arg: str | None) -> Path:
    """A fresh scratch dir, world-readable (nginx workers run as an unprivileged user)."""
    parent: Path | None = None
    if arg:
        parent = Path(arg)
        parent.mkdir(parents=True, exist_ok=True)
    else:
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 3 << 30:
            parent = shm
    path = Path(tempfile.mkdtemp(prefix="quicstore-bench-", dir=parent))
    path.chmod(0o755)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small profile, 1 rep (< 3 minutes)")
    p.add_argument(
        "--systems",
        help="comma list of system keys or families (see --list); =KEY selects that system "
        "alone where KEY also names a family",
    )
    p.add_argument("--workloads", help="comma list of workload letters a-f (default: all)")
    p.add_argument("--reps", type=int, help="override repetitions per cell")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="one system at a time (default: all set up, repetitions taken in turns)",
    )
    p.add_argument("--timeout", type=float, help="override the per-measurement bound, s")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "bench-results"),
                   help="where the JSON and markdown go (default: bench-results/)")
    p.add_argument("--json", help="exact JSON output path (overrides --out-dir naming)")
    p.add_argument("--workdir", help="parent of the scratch dir (default: /dev/shm or /tmp)")
    p.add_argument("--keep-workdir", action="store_true", help="keep objects, logs, specs")
    p.add_argument("--seed", type=int, default=1, help="seed of the object bytes")
    p.add_argument("--install", action="store_true", help="apt/pip install what the bench needs")
    p.add_argument("--list", action="store_true", help="list systems and workloads, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.install:
        return install()
    all_systems, import_errors = load_all()
    for err in import_errors:
        log_progress(f"system module failed to import: {err}")
    systems = _select(all_systems, args.systems)
    profile = PROFILES["quick" if args.quick else "full"]
    overrides: dict[str, Any] = {}
    if args.reps:
        overrides["reps"] = args.reps
    if args.timeout:
        overrides["timeout_s"] = args.timeout
        overrides["epoch_timeout_s"] = args.timeout
        overrides["cell_budget_s"] = max(profile.cell_budget_s, args.timeout)
    profile = dataclasses.replace(profile, **overrides)
    groups = set(args.workloads.replace(",", "")) if args.workloads else set(WORKLOAD_GROUPS)
    if not groups <= set(WORKLOAD_GROUPS):
        raise SystemExit(f"unknown workload(s) {sorted(groups - set(WORKLOAD_GROUPS))}")
    if args.list:
        for s in all_systems:
            extra = " (optional: not in the default run)" if getattr(s, "optional", False) else ""
            print(f"{s.key:<16} {s.family:<8} {s.name}{extra}: {s.notes}")
        print("workloads: a b c (c1 sequential, c32) d e f")
        return 0

    interrupt_on_sigterm()
    started = datetime.datetime.now(datetime.UTC)
    load_before = load_average()
    t0 = time.monotonic()
    workdir = _workdir(args.workdir)
    procs = Registry()
    cells: list[Cell] = []
    interrupted = False
    workloads = []
    try:
        log_progress(f"profile {profile.name}; work dir {workdir}")
        cert, key = write_certificate(workdir / "certs")
        objects = ObjectSet.generate(workdir / "objects", profile, seed=args.seed)
        workloads = [w for w in build_workloads(objects, profile) if w.group in groups]
        log_progress(f"objects ready ({objects.root})")
        env = BenchEnv(
            workdir=workdir, objects=objects, cert=cert, key=key, profile=profile,
            procs=procs, cache_dir=Path(args.out_dir) / ".cache", repo_root=REPO_ROOT,
        )  # fmt: skip
        if args.sequential:
            for system in systems:
                run_system(system, workloads, env, log_progress, cells)
        else:
            run_interleaved(systems, workloads, env, log_progress, cells)
    except KeyboardInterrupt:
        interrupted = True
        log_progress("interrupted: stopping child processes")
    finally:
        procs.stop_all()
        if args.keep_workdir:
            log_progress(f"kept work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - t0

    table = render(systems, cells)
    print(table)
    print(f"\nprofile {profile.name}: {duration:.1f} s" + (" (interrupted)" if interrupted else ""))
    doc = {
        "tool": "tools.bench",
        "started_utc": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 3),
        "interrupted": interrupted,
        "profile": dataclasses.asdict(profile),
        "host": {**_host_info(), "loadavg_before": load_before},
        "units": {
            "mb_per_s": "10**6 bytes per second",
            "cpu_s_per_gb": "utime+stime seconds per 10**9 bytes",
            "rss": "KiB in samples (VmHWM / ru_maxrss), MiB in summaries",
            "lat_ms": "milliseconds per request",
        },
        "workloads": [
            {"id": w.id, "title": w.title, "metric": w.metric, "requests": len(w.requests),
             "concurrency": w.concurrency, "total_bytes": w.total_bytes}
            for w in workloads
        ],
        "systems": [{"key": s.key, "family": s.family, "name": s.name, "notes": s.notes}
                    for s in systems],
        "cells": [c.to_json() for c in cells],
        "table_markdown": table,
    }  # fmt: skip
    write_results(doc, table, args.json, args.out_dir, f"bench-{profile.name}", started)
    return 130 if interrupted else 0
