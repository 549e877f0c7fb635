"""The bench's orchestrator: repetitions in turns across systems, and what a cell records
when a system is n/a, fails to start, fails a sample or runs out of its time budget."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from tools.bench.model import QUICK, Cell, Obj, Request, Sample, Workload
from tools.bench.procs import Registry
from tools.bench.runner import run_interleaved, run_system
from tools.bench.systems.base import BenchEnv, RunContext


def _workload(wid: str, size: int = 10) -> Workload:
    return Workload(
        id=wid, group=wid, title=wid, metric="MB/s", requests=(Request("/x", size),),
        concurrency=1,
    )  # fmt: skip


class FakeSystem:
    """Records every call into the shared ``calls`` list; each sample takes ``elapsed_s``."""

    def __init__(
        self,
        key: str,
        calls: list[str],
        *,
        fail_setup: bool = False,
        fail_rep: int | None = None,
        elapsed_s: float = 0.5,
        unsupported: str = "",
    ) -> None:
        self.key = self.family = self.name = key
        self.notes = ""
        self.calls = calls
        self.fail_setup = fail_setup
        self.fail_rep = fail_rep
        self.elapsed_s = elapsed_s
        self.reason = unsupported
        self.bounds: dict[str, float] = {}

    def unsupported(self, workload: Workload) -> str | None:
        return self.reason or None

    def setup(self, env: BenchEnv) -> None:
        self.calls.append(f"{self.key} setup")
        if self.fail_setup:
            raise RuntimeError("no binary")

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        self.calls.append(f"{self.key} {workload.id} {ctx.rep}")
        self.bounds[workload.id] = ctx.timeout_s
        if ctx.rep == self.fail_rep:
            raise RuntimeError("client crashed")
        return Sample(elapsed_s=self.elapsed_s, bytes=workload.total_bytes, requests=1)

    def teardown(self) -> None:
        self.calls.append(f"{self.key} teardown")


@pytest.fixture
def env(tmp_path: Path) -> BenchEnv:
    profile = dataclasses.replace(QUICK, reps=3, cell_budget_s=10.0)
    return BenchEnv(
        workdir=tmp_path, objects=None, cert=tmp_path, key=tmp_path,  # type: ignore[arg-type]
        profile=profile, procs=Registry(), cache_dir=tmp_path, repo_root=tmp_path,
    )  # fmt: skip


def _cell(cells: list[Cell], system: str, workload: str) -> Cell:
    (cell,) = [c for c in cells if c.system == system and c.workload == workload]
    return cell


def test_interleaved_runs_each_round_across_all_systems_before_the_next(env: BenchEnv) -> None:
    calls: list[str] = []
    systems = [FakeSystem("p", calls), FakeSystem("q", calls)]
    cells: list[Cell] = []
    run_interleaved(systems, [_workload("a"), _workload("b")], env, lambda _: None, cells)  # type: ignore[arg-type]
    assert calls == [
        "p setup", "q setup",
        "p a 0", "q a 0", "p a 1", "q a 1", "p a 2", "q a 2",
        "p b 0", "q b 0", "p b 1", "q b 1", "p b 2", "q b 2",
        "p teardown", "q teardown",
    ]  # fmt: skip
    assert [(c.system, c.workload, c.status, len(c.samples)) for c in cells] == [
        ("p", "a", "ok", 3), ("q", "a", "ok", 3), ("p", "b", "ok", 3), ("q", "b", "ok", 3),
    ]  # fmt: skip
    assert _cell(cells, "p", "a").summary  # medians were taken


def test_sequential_runs_one_system_at_a_time(env: BenchEnv) -> None:
    calls: list[str] = []
    cells: list[Cell] = []
    for system in (FakeSystem("p", calls), FakeSystem("q", calls)):
        run_system(system, [_workload("a")], env, lambda _: None, cells)  # type: ignore[arg-type]
    assert calls == [
        "p setup", "p a 0", "p a 1", "p a 2", "p teardown",
        "q setup", "q a 0", "q a 1", "q a 2", "q teardown",
    ]  # fmt: skip


def test_a_failed_sample_stops_that_system_and_the_others_go_on(env: BenchEnv) -> None:
    calls: list[str] = []
    systems = [FakeSystem("p", calls, fail_rep=1), FakeSystem("q", calls)]
    cells: list[Cell] = []
    run_interleaved(systems, [_workload("a")], env, lambda _: None, cells)  # type: ignore[arg-type]
    assert calls[2:-2] == ["p a 0", "q a 0", "p a 1", "q a 1", "q a 2"]
    failed = _cell(cells, "p", "a")
    assert failed.status == "ok" and failed.reason.startswith("1 of 2 reps failed")
    assert _cell(cells, "q", "a").reason == ""


def test_setup_failures_and_unsupported_workloads_become_cells(env: BenchEnv) -> None:
    calls: list[str] = []
    systems = [
        FakeSystem("broken", calls, fail_setup=True),
        FakeSystem("tcp", calls, unsupported="QUIC-only workload"),
        FakeSystem("q", calls),
    ]
    cells: list[Cell] = []
    run_interleaved(systems, [_workload("a")], env, lambda _: None, cells)  # type: ignore[arg-type]
    broken = _cell(cells, "broken", "a")
    assert broken.status == "error" and "no binary" in broken.reason
    tcp = _cell(cells, "tcp", "a")
    assert (tcp.status, tcp.reason, tcp.samples) == ("n/a", "QUIC-only workload", [])
    assert "broken teardown" in calls and not any(c.startswith("broken a") for c in calls)
    assert not any(c.startswith("tcp a") for c in calls)
    assert len(_cell(cells, "q", "a").samples) == 3


def test_a_system_over_its_cell_budget_stops_repeating(env: BenchEnv) -> None:
    calls: list[str] = []
    systems = [FakeSystem("slow", calls, elapsed_s=6.0), FakeSystem("q", calls)]
    cells: list[Cell] = []
    run_interleaved(systems, [_workload("a")], env, lambda _: None, cells)  # type: ignore[arg-type]
    slow = _cell(cells, "slow", "a")
    assert len(slow.samples) == 2 and slow.reason == "2 of 3 reps (cell time budget)"
    assert len(_cell(cells, "q", "a").samples) == 3


def test_the_epoch_has_its_own_bound(env: BenchEnv) -> None:
    """(d) is bounded by the profile's epoch bound (a slow system reports a partial rate
    sooner); the other workloads by the measurement bound."""
    system = FakeSystem("p", [])
    run_interleaved([system], [_workload("a"), _workload("d")], env, lambda _: None, [])  # type: ignore[list-item]
    assert system.bounds == {
        "a": env.profile.timeout_s,
        "d": min(env.profile.timeout_s, env.profile.epoch_timeout_s),
    }
    full = dataclasses.replace(env.profile, timeout_s=120.0, epoch_timeout_s=60.0)
    assert (full.bound_s("d"), full.bound_s("a"), full.bound_s("f")) == (60.0, 120.0, 120.0)


class BodyWriter(FakeSystem):
    """Writes ``body`` to the verify file when asked to, as the clients do; records which
    runs had one."""

    def __init__(self, key: str, calls: list[str], body: bytes) -> None:
        super().__init__(key, calls)
        self.body = body
        self.verify_runs: list[bool] = []

    def run(self, workload: Workload, ctx: RunContext) -> Sample:
        self.verify_runs.append(ctx.verify_path is not None)
        if ctx.verify_path is not None:
            ctx.verify_path.write_bytes(self.body)
        return super().run(workload, ctx)


def test_the_object_is_verified_once_untimed_before_the_timed_repetitions(env: BenchEnv) -> None:
    """A workload of one whole object: one download into a file first, its sha256 checked
    and kept as the cell's verification, not among the samples; the three timed
    repetitions write nothing. A body that does not match fails the cell at once."""
    body = bytes(range(256)) * 40
    big = Obj("/big.bin", len(body), hashlib.sha256(body).hexdigest())
    workload = dataclasses.replace(_workload("a", len(body)), big=big)
    calls: list[str] = []
    good, bad = BodyWriter("good", calls, body), BodyWriter("bad", calls, body[::-1])
    cells: list[Cell] = []
    run_interleaved([good, bad], [workload], env, lambda _: None, cells)  # type: ignore[list-item]
    assert good.verify_runs == [True, False, False, False]
    cell = _cell(cells, "good", "a")
    assert cell.verification is not None and cell.verification.sha256_ok is True
    assert len(cell.samples) == 3 and all(s.sha256_ok is None for s in cell.samples)
    assert cell.to_json()["verification"]["sha256_ok"] is True
    assert bad.verify_runs == [True]
    failed = _cell(cells, "bad", "a")
    assert failed.status == "error" and "sha256 mismatch" in failed.reason
    assert not list((env.workdir / "verify").glob("*"))
