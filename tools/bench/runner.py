"""The orchestrator loops. By default every system is set up first and each workload's
repetitions run in rounds, one of each system per round (:func:`run_interleaved`); with
``--sequential``, each system in turn is set up, runs every workload's repetitions and is
torn down (:func:`run_system`).

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


def _set_up(
    system: System,
    workloads: list[Workload],
    env: BenchEnv,
    log: Callable[[str], None],
    cells: list[Cell],
) -> bool:
    """Start ``system``; on failure, tear it down and record an error cell per workload."""
    try:
        t0 = time.monotonic()
        system.setup(env)
        log(f"{system.key}: ready in {time.monotonic() - t0:.1f} s")
        return True
    except Exception as exc:
        log(f"{system.key}: setup failed: {exc}")
        system.teardown()
        cells.extend(
            Cell(system.key, w.id, status="error", reason=f"setup failed: {exc}") for w in workloads
        )
        return False


class _CellRun:
    """One system's repetitions of one workload, measured one at a time."""

    def __init__(self, system: System, wl: Workload, cell: Cell) -> None:
        self.system = system
        self.wl = wl
        self.cell = cell
        self.spent = 0.0
        """Seconds of measured windows so far (against the profile's cell budget)."""
        self.done = False

    def measure(self, env: BenchEnv, log: Callable[[str], None], rep: int, verified: bool) -> bool:
        """Take repetition ``rep`` into the cell; return whether a sha256 was verified.
        A workload of one whole object is first downloaded once into a file and its sha256
        checked, untimed (the cell's ``verification``): every timed repetition then counts
        and discards the bytes alike. (Timed, that download was quicstore's slowest
        repetition by three times in every run, its client copying into the file at about
        0.45 GB/s, and a median of three then took the slower of the other two; outside
        the bench the same client and file wrote at 600-780 MB/s.) Marks the run done after
        a failed sample or once the budget is spent."""
        system, wl, prof = self.system, self.wl, env.profile
        if wl.big is not None and not verified:
            vpath = env.path("verify", f"{env.unique(system.key)}.bin")
            check_run = self._run(RunContext(rep=rep, timeout_s=prof.bound_s(wl.group),
                                             verify_path=vpath))  # fmt: skip
            self.cell.verification = check_run
            log(f"{system.key} {wl.id} verification: {_describe(check_run, wl)}")
            if check_run.status != "ok":
                self.cell.samples.append(check_run)
                self.done = True
                return False
            verified = True
        t = time.monotonic()
        sample = self._run(RunContext(rep=rep, timeout_s=prof.bound_s(wl.group)))
        # The budget counts measured windows, not the set-up a cell's first rep pays for
        # (a gateway started with other options and the object uploaded again, as in (f)).
        self.spent += sample.elapsed_s or (time.monotonic() - t)
        self.cell.samples.append(sample)
        log(f"{system.key} {wl.id} rep {rep + 1}: {_describe(sample, wl)}")
        if sample.status != "ok" or self.spent > prof.cell_budget_s or rep + 1 >= prof.reps:
            self.done = True
        return verified

    def _run(self, ctx: RunContext) -> Sample:
        """One run of the system, checked (sizes, and the sha256 with a verify path)."""
        try:
            sample = self.system.run(self.wl, ctx)
        except Exception as exc:
            sample = Sample(status="error", error=f"{type(exc).__name__}: {exc}")
        check(sample, self.wl, ctx)
        return sample

    def close(self, reps: int) -> None:
        """The cell's status and reason from its samples, and its summary."""
        cell = self.cell
        ok = [s for s in cell.samples if s.status == "ok"]
        bad = [s for s in cell.samples if s.status != "ok"]
        if not ok and bad:
            cell.status, cell.reason = bad[0].status, bad[0].error
        elif bad:
            cell.reason = f"{len(bad)} of {len(cell.samples)} reps failed: {bad[0].error}"
        elif len(ok) < reps:
            cell.reason = f"{len(ok)} of {reps} reps (cell time budget)"
        cell.summarize(self.wl)


def _open_cell(system: System, wl: Workload, cells: list[Cell]) -> _CellRun | None:
    """Append the cell of ``system`` and ``wl``; None if the system cannot run it (n/a)."""
    cell = Cell(system.key, wl.id)
    cells.append(cell)
    reason = system.unsupported(wl)
    if reason:
        cell.status, cell.reason = "n/a", reason
        cell.summarize(wl)
        return None
    return _CellRun(system, wl, cell)


def run_system(
    system: System,
    workloads: list[Workload],
    env: BenchEnv,
    log: Callable[[str], None],
    cells: list[Cell],
) -> None:
    """Append all cells of one system to ``cells`` as they finish (setup and teardown
    included), so that an interrupted run keeps what it measured."""
    if not _set_up(system, workloads, env, log, cells):
        return
    verified = False
    try:
        for wl in workloads:
            run = _open_cell(system, wl, cells)
            if run is None:
                continue
            try:
                rep = 0
                while not run.done:
                    verified = run.measure(env, log, rep, verified)
                    rep += 1
            except KeyboardInterrupt:
                run.cell.status, run.cell.reason = "interrupted", "run interrupted"
                raise
            finally:
                run.close(env.profile.reps)
    finally:
        system.teardown()


def run_interleaved(
    systems: list[System],
    workloads: list[Workload],
    env: BenchEnv,
    log: Callable[[str], None],
    cells: list[Cell],
) -> None:
    """Every system set up at once (idle servers on their own ports), then each
    workload's repetitions in rounds: rep 1 of every system, then rep 2, and so on. The
    machine's speed drifts by 15-30 % from one minute to the next here; measured in turn,
    a drift falls on every system of a round alike instead of on whichever system ran
    during it, and the ratios in one run stay comparable."""
    live = [s for s in systems if _set_up(s, workloads, env, log, cells)]
    verified = {s.key: False for s in live}
    try:
        for wl in workloads:
            runs = [r for s in live if (r := _open_cell(s, wl, cells)) is not None]
            try:
                rep = 0
                while any(not r.done for r in runs):
                    for run in runs:
                        if not run.done:
                            key = run.system.key
                            verified[key] = run.measure(env, log, rep, verified[key])
                    rep += 1
            except KeyboardInterrupt:
                for run in runs:
                    if not run.done:
                        run.cell.status, run.cell.reason = "interrupted", "run interrupted"
                raise
            finally:
                for run in runs:
                    run.close(env.profile.reps)
    finally:
        for system in live:
            system.teardown()
