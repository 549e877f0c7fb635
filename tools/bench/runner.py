"""The orchestrator loop: for each system, setup, every workload's repetitions, teardown.

Correctness checks on every sample: number of responses and body bytes must match the
workload; the first whole-object download of each system is written to the work dir and its
sha256 compared with the object's. A failed check turns the sample into an error.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from tools.bench.model import Cell, Sample, Workload
from tools.bench.systems.base import BenchEnv, RunContext, System


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def check(sample: Sample, workload: Workload, ctx: RunContext) -> None:
    """Mark ``sample`` as an error if sizes or the sha256 do not match (in place)."""
    if ctx.verify_path is not None and workload.big is not None:
        if ctx.verify_path.exists():
            if sample.status == "ok":
                sample.sha256 = _sha256_file(ctx.verify_path)
                sample.sha256_ok = sample.sha256 == workload.big.sha256
            ctx.verify_path.unlink()
        elif sample.status == "ok":
            sample.sha256_ok = False
    if sample.status == "timeout":
        sample.error = f"bound of {ctx.timeout_s:.0f} s reached" + (
            f"; {sample.bytes / 1e6:.1f} MB in {sample.requests} responses by then "
            f"({sample.bytes / sample.net_s / 1e6:.2f} MB/s)"
            if sample.bytes and sample.elapsed_s
            else ""
        )
    if sample.status != "ok":
        return
    want_n, want_b = len(workload.requests), workload.total_bytes
    if sample.requests != want_n or sample.bytes != want_b:
        sample.status = "error"
        sample.error = (
            f"received {sample.bytes} bytes in {sample.requests} responses, "
            f"expected {want_b} in {want_n}"
        )
    elif sample.sha256_ok is False:
        sample.status = "error"
        sample.error = f"sha256 mismatch: {sample.sha256} != {workload.big.sha256}"  # type: ignore[union-attr]


def _describe(sample: Sample, workload: Workload) -> str:
    if sample.status != "ok":
        return f"{sample.status}: {sample.error}"[:160]
    if workload.metric == "ms" and sample.lat_ms:
        lat = sorted(sample.lat_ms)
        text = f"p50 {lat[len(lat) // 2]:.3f} ms"
    elif workload.metric == "ms":
        text = f"mean {sample.net_s * 1e3 / max(sample.requests, 1):.3f} ms"
    elif workload.metric == "req/s":
        text = f"{sample.requests / sample.net_s:,.0f} req/s"
    else:
        text = f"{sample.bytes / sample.net_s / 1e6:,.1f} MB/s"
    sha = " sha256 ok" if sample.sha256_ok else ""
    return f"{text} in {sample.elapsed_s:.2f} s{sha}"


def run_system(
    system: System,
    workloads: list[Workload],
    env: BenchEnv,
    log: Callable[[str], None],
    cells: list[Cell],
) -> None:
    """Append all cells of one system to ``cells`` as they finish (setup and teardown
    included), so that an interrupted run keeps what it measured."""
    try:
        t0 = time.monotonic()
        system.setup(env)
        log(f"{system.key}: ready in {time.monotonic() - t0:.1f} s")
    except Exception as exc:
        log(f"{system.key}: setup failed: {exc}")
        system.teardown()
        cells.extend(
            Cell(system.key, w.id, status="error", reason=f"setup failed: {exc}")
            for w in workloads
        )
        return
    verified = False
    try:
        for wl in workloads:
            cell = Cell(system.key, wl.id)
            cells.append(cell)
            reason = system.unsupported(wl)
            if reason:
                cell.status, cell.reason = "n/a", reason
                continue
            try:
                verified = _repeat(system, wl, env, log, cell, verified)
            except KeyboardInterrupt:
                cell.status, cell.reason = "interrupted", "run interrupted"
                raise
            finally:
                cell.summarize(wl)
    finally:
        system.teardown()


def _repeat(
    system: System,
    wl: Workload,
    env: BenchEnv,
    log: Callable[[str], None],
    cell: Cell,
    verified: bool,
) -> bool:
    """Measure up to ``reps`` samples into ``cell``; return whether a sha256 was verified."""
    prof = env.profile
    spent = 0.0
    for rep in range(prof.reps):
        verify = wl.big is not None and not verified
        vpath = env.path("verify", f"{env.unique(system.key)}.bin") if verify else None
        ctx = RunContext(rep=rep, timeout_s=prof.timeout_s, verify_path=vpath)
        t = time.monotonic()
        try:
            sample = system.run(wl, ctx)
        except Exception as exc:
            sample = Sample(status="error", error=f"{type(exc).__name__}: {exc}")
        check(sample, wl, ctx)
        verified = verified or bool(sample.sha256_ok)
        # The budget counts measured windows, not the set-up a cell's first rep pays for
        # (a gateway started with other options and the object uploaded again, as in (f)).
        spent += sample.elapsed_s or (time.monotonic() - t)
        cell.samples.append(sample)
        log(f"{system.key} {wl.id} rep {rep + 1}: {_describe(sample, wl)}")
        if sample.status != "ok" or spent > prof.cell_budget_s:
            break
    ok = [s for s in cell.samples if s.status == "ok"]
    bad = [s for s in cell.samples if s.status != "ok"]
    if not ok:
        cell.status, cell.reason = bad[0].status, bad[0].error
    elif bad:
        cell.reason = f"{len(bad)} of {len(cell.samples)} reps failed: {bad[0].error}"
    elif len(ok) < prof.reps:
        cell.reason = f"{len(ok)} of {prof.reps} reps (cell time budget)"
    return verified
