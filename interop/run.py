"""The interop matrix driver: ``python -m interop.run``.

For every test case it runs quicstore's server against every client peer and quicstore's
client against every server peer (``--sanity`` adds every peer server x peer client pair), each
cell on loopback with fresh ports::

    client --> wire tap --> [impairment proxy -->] server

Every endpoint is started through the contract (``interop.contract``) as its own process and
stopped by its PID; the server's readiness is polled (its UDP port in /proc/net/udp); every run
is bounded in time. A cell passes when the client exits 0, every file is byte-identical, and
the test case's oracle checks (``interop.oracles``) hold. Results go to
``interop/results/matrix.json`` and ``matrix.md``; logs of failed cells stay under
``interop/results/logs/<server>_<client>/<testcase>/``. Exit status 1 if any cell failed.

    python -m interop.run                         # the quicstore matrix, all test cases
    python -m interop.run --quick                 # the CI subset (~10 min)
    python -m interop.run --sanity --no-quicstore # peer-vs-peer only
    python -m interop.run --servers aioquic --clients ngtcp2 --testcases handshake,retry
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from interop import oracles
from interop.contract import EXIT_UNSUPPORTED, INTEROP_DIR, REPO_DIR, write_certs
from interop.peers import PeerInfo, all_peers, repo_env
from interop.testcases import BY_NAME, HQ_OR_H3, NAMES, TESTCASES, TestCase
from interop.wire import LoopThread, WireTap, analyze
from tools.bench.procs import Child, Registry, free_port, wait_listening
from tools.impair_proxy import start_proxy

QUICSTORE = "quicstore"
SERVER_READY_S = 30.0
"""Bound on a server's start-up until it holds its UDP port (s)."""
QLOG_FLUSH_S = 3.0
"""Bound on waiting, after the client exits, for the server's qlog files to appear (s)."""
CELL_SLACK_S = 20.0
"""Added to a test case's client bound for the whole cell (s)."""


@dataclasses.dataclass
class Cell:
    """One (server, client, test case) result."""

    server: str
    client: str
    testcase: str
    status: str = "fail"
    """``pass``, ``fail`` or ``unsupported``."""
    reason: str = ""
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    log_dir: str | None = None
    alpn: str = ""

    @property
    def peer(self) -> str:
        """The non-quicstore side (or ``server->client`` for a sanity pair)."""
        if self.server == QUICSTORE:
            return self.client
        if self.client == QUICSTORE:
            return self.server
        return f"{self.server}->{self.client}"

    @property
    def peer_role(self) -> str:
        """The peer's role in a quicstore cell, ``pair`` for sanity pairs."""
        if self.server == QUICSTORE and self.client != QUICSTORE:
            return "client"
        if self.client == QUICSTORE and self.server != QUICSTORE:
            return "server"
        return "pair"


class CellFailure(Exception):
    """A cell failed (``reason`` says which step)."""


class CellUnsupported(Exception):
    """An endpoint exited 127 (or declared the test case unsupported)."""


def _tail(path: Path, lines: int = 12, width: int = 240) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(line[:width] for line in text[-lines:])


def _unsupported_line(path: Path) -> str:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("unsupported:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "exit code 127"


def _exit_code(child: Child) -> int | None:
    return child.popen.returncode


class Runner:
    """Runs cells one at a time (the machine has 2 cores; parallel cells would skew timing)."""

    def __init__(self, out_dir: Path, keep_logs: bool) -> None:
        self.out_dir = out_dir
        self.logs_dir = out_dir / "logs"
        self.keep_logs = keep_logs
        self.procs = Registry()
        self.loop = LoopThread()
        self.scratch = Path(tempfile.mkdtemp(prefix="quicstore-interop-"))
        self.certs = write_certs(self.scratch / "certs")

    def close(self) -> None:
        """Stop everything still running and remove the scratch folder."""
        self.procs.stop_all()
        self.loop.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ----------------------------------------------------------------------------- one cell

    def run_cell(self, server: PeerInfo, client: PeerInfo, tc: TestCase) -> Cell:
        """Run one cell and return its result (never raises for a failing peer)."""
        cell = Cell(server.name, client.name, tc.name)
        started = time.monotonic()
        reasons = []
        for role, peer in (("server", server), ("client", client)):
            support = peer.support(role, tc.name)
            if not support.ok:
                reasons.append(f"{peer.name} ({role}): {support.reason}")
        if reasons:
            cell.status, cell.reason = "unsupported", "; ".join(reasons)
            return cell
        if tc.alpn == HQ_OR_H3:
            both = "hq-interop" in server.alpns and "hq-interop" in client.alpns
            cell.alpn = "hq-interop" if both else "h3"
        else:
            cell.alpn = tc.alpn
        work = self.logs_dir / f"{server.name}_{client.name}" / tc.name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        cell.log_dir = str(work.relative_to(self.out_dir.parent))
        try:
            self._run(cell, server, client, tc, work)
            cell.status = "pass"
        except CellUnsupported as exc:
            cell.status, cell.reason = "unsupported", str(exc)
        except CellFailure as exc:
            cell.status, cell.reason = "fail", str(exc)
        except Exception as exc:
            cell.status, cell.reason = "fail", f"harness error: {type(exc).__name__}: {exc}"
        finally:
            self.procs.stop_all()
            cell.duration_s = round(time.monotonic() - started, 2)
            for big in ("www", "downloads"):
                shutil.rmtree(work / big, ignore_errors=True)
            if cell.status != "fail" and not self.keep_logs:
                shutil.rmtree(work, ignore_errors=True)
                cell.log_dir = None
        return cell

    def _env(self, role: str, tc: TestCase, port: int, work: Path, alpn: str) -> dict[str, str]:
        side = work / role
        (side / "qlog").mkdir(parents=True, exist_ok=True)
        (side / "logs").mkdir(parents=True, exist_ok=True)
        env = repo_env()
        for name in ("SSLKEYLOGFILE", "QUICLOGDIR", "RANGE"):
            env.pop(name, None)
        env.update(
            ROLE=role,
            TESTCASE=tc.name,
            HOST="127.0.0.1",
            PORT=str(port),
            CERTS=str(self.certs),
            QLOGDIR=str(side / "qlog"),
            SSLKEYLOGFILE=str(side / "keys.log"),
            LOGS=str(side / "logs"),
            ALPN=alpn,
        )
        if tc.range_header:
            env["RANGE"] = tc.range_header
        return env

    def _run(
        self, cell: Cell, server: PeerInfo, client: PeerInfo, tc: TestCase, work: Path
    ) -> None:
        www, downloads = work / "www", work / "downloads"
        files = tc.make_www(www, text=client.text_payloads)
        downloads.mkdir()
        if server.name == QUICSTORE or client.name == QUICSTORE:
            from interop.peers.quicstore import ENDPOINT

            if not ENDPOINT.is_file():
                raise CellFailure(f"{ENDPOINT.relative_to(REPO_DIR)} does not exist yet")

        # server
        port = free_port("udp")
        senv = self._env("server", tc, port, work, cell.alpn)
        senv["WWW"] = str(www)
        slog = work / "server" / "output.log"
        schild = self.procs.spawn(
            f"{server.name}-server", server.command(), cwd=REPO_DIR, env=senv, log_path=slog
        )
        try:
            wait_listening(schild, port, "udp", timeout=SERVER_READY_S)
        except (RuntimeError, TimeoutError) as exc:
            schild.wait4(1.0)
            if _exit_code(schild) == EXIT_UNSUPPORTED:
                raise CellUnsupported(f"{server.name} (server): {_unsupported_line(slog)}") from exc
            raise CellFailure(f"server did not start: {exc}\n{_tail(slog)}") from exc

        # path: tap -> [proxy ->] server
        proxy = None
        upstream: tuple[str, int] = ("127.0.0.1", port)
        if tc.impairment is not None:
            proxy = self.loop.run(start_proxy(tc.impairment, "127.0.0.1:0", upstream))
            upstream = proxy.address
        tap = WireTap(upstream)
        tap_port = self.loop.run(tap.start())

        # client
        urls = [f"https://127.0.0.1:{tap_port}/{f.name}" for f in tc.files(client.text_payloads)]
        cenv = self._env("client", tc, tap_port, work, cell.alpn)
        cenv["DOWNLOADS"] = str(downloads)
        cenv["REQUESTS"] = " ".join(urls)
        clog = work / "client" / "output.log"
        bound = tc.timeout_s * (2 if tc.connections == "resume" else 1) + CELL_SLACK_S
        cchild = self.procs.spawn(
            f"{client.name}-client", client.command(), cwd=REPO_DIR, env=cenv, log_path=clog
        )
        finished = cchild.wait4(bound)
        if not finished:
            self.procs.stop(cchild)
        rc = _exit_code(cchild)

        # let the server write its qlog (aioquic writes a trace when a connection ends)
        deadline = time.monotonic() + QLOG_FLUSH_S
        sq = work / "server" / "qlog"
        while server.qlog and time.monotonic() < deadline:
            if any(sq.iterdir()) and _quiet(sq, 0.3):
                break
            time.sleep(0.05)
        server_alive = schild.alive()
        self.procs.stop(schild)
        self.loop.run(tap.close())
        dropped = None
        if proxy is not None:
            self.loop.run(proxy.close())
            counters = proxy.counters
            dropped = (counters.up.datagrams_dropped, counters.down.datagrams_dropped)

        report = analyze(tap.records, [work / "client" / "keys.log", work / "server" / "keys.log"])
        (work / "wire.json").write_text(json.dumps(report.summary(), indent=1))
        evidence = oracles.Evidence(
            testcase=tc,
            alpn=cell.alpn,
            wire=report,
            qlogs=oracles.read_qlogs(work / "server" / "qlog", "server")
            + oracles.read_qlogs(work / "client" / "qlog", "client"),
            logs={"server": _read(slog), "client": _read(clog)},
            dropped=dropped,
        )
        results = oracles.run_checks(evidence)
        cell.checks = [dataclasses.asdict(r) for r in results]
        failed = "; ".join(f"check {r.name} failed: {r.detail}" for r in results if not r.ok)
        if rc == EXIT_UNSUPPORTED:
            raise CellUnsupported(f"{client.name} (client): {_unsupported_line(clog)}")
        why = None
        if not finished:
            why = f"client timed out after {bound:.0f} s"
        elif rc != 0:
            why = f"client exited {rc}"
        elif not server_alive:
            why = "server exited during the test"
        if why is not None:
            tail = _tail(slog if why.startswith("server") else clog)
            raise CellFailure(f"{why}{'; ' + failed if failed else ''}\n{tail}")

        # files
        for f in tc.files(client.text_payloads):
            got = downloads / f.name
            if not got.is_file():
                raise CellFailure(f"{f.name} was not downloaded\n{_tail(clog)}")
            want = f.expected(files[f.name], tc.byte_range)
            data = got.read_bytes()
            if data != want:
                raise CellFailure(
                    f"{f.name}: {len(data)} bytes downloaded, {len(want)} expected, "
                    f"{'same length but different bytes' if len(data) == len(want) else ''}"
                )

        # oracles
        if failed:
            raise CellFailure(failed)


def _quiet(folder: Path, seconds: float) -> bool:
    """True when no file in ``folder`` changed in the last ``seconds``."""
    now = time.time()
    return all(now - p.stat().st_mtime >= seconds for p in folder.iterdir() if p.is_file())


def _read(path: Path, limit: int = 4_000_000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


# --------------------------------------------------------------------------------- planning


def plan(
    peers: dict[str, PeerInfo],
    servers: list[str],
    clients: list[str],
    testcases: list[TestCase],
    quicstore: bool,
    sanity: bool,
) -> list[tuple[PeerInfo, PeerInfo, TestCase]]:
    """The cells to run, test case by test case."""
    qs = peers[QUICSTORE]
    cells = []
    for tc in testcases:
        if quicstore:
            cells += [(qs, peers[c], tc) for c in clients]
            cells += [(peers[s], qs, tc) for s in servers]
        if sanity:
            cells += [(peers[s], peers[c], tc) for s in servers for c in clients]
    return cells


def _names(value: str | None, default: list[str], known: list[str], what: str) -> list[str]:
    if not value:
        return default
    names = [n.strip() for n in value.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown {what} {n!r}; known: {', '.join(known)}")
    return names


# ---------------------------------------------------------------------------------- reports


def write_reports(cells: list[Cell], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``matrix.json`` and ``matrix.md``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "matrix.json", out_dir / "matrix.md"
    jpath.write_text(
        json.dumps({"meta": meta, "cells": [dataclasses.asdict(c) for c in cells]}, indent=1)
    )
    lines = [
        "# quicstore interop matrix",
        "",
        f"Run {meta['started']} ({meta['mode']}), {meta['total_s']:.0f} s in total; "
        f"{meta['counts']['pass']} pass, {meta['counts']['fail']} fail, "
        f"{meta['counts']['unsupported']} unsupported.",
        "",
        "Peers: " + "; ".join(f"**{k}**: {v}" for k, v in meta["peers"].items()),
        "",
    ]
    notes: list[str] = []

    def table(title: str, role: str) -> None:
        rows = sorted({c.peer for c in cells if c.peer_role == role})
        if not rows:
            return
        tcs = [t for t in NAMES if any(c.testcase == t for c in cells if c.peer_role == role)]
        lines.extend([f"## {title}", "", "| peer | " + " | ".join(tcs) + " |",
                      "|---|" + "---|" * len(tcs)])  # fmt: skip
        for row in rows:
            out = []
            for t in tcs:
                match = [c for c in cells if c.peer == row and c.peer_role == role and
                         c.testcase == t]  # fmt: skip
                if not match:
                    out.append(" ")
                    continue
                c = match[0]
                if c.status == "pass":
                    out.append(f"pass ({c.duration_s:.0f} s)")
                else:
                    notes.append(
                        f"{c.status}: server {c.server}, client {c.client}, {c.testcase}: "
                        + c.reason.splitlines()[0][:400]
                        if c.reason
                        else c.status
                    )
                    label = "**FAIL**" if c.status == "fail" else "unsupported"
                    out.append(f"{label} [{len(notes)}]")
            lines.append(f"| {row} | " + " | ".join(out) + " |")
        lines.append("")

    table("quicstore as server (rows: client peers)", "client")
    table("quicstore as client (rows: server peers)", "server")
    table("peer-vs-peer sanity pairs (rows: server->client)", "pair")
    if notes:
        lines += ["## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    mpath.write_text("\n".join(lines))
    return jpath, mpath


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the cells, write the reports, return the exit status."""
    peers = all_peers()
    server_peers = [n for n, p in peers.items() if "server" in p.roles and n != QUICSTORE]
    client_peers = [n for n, p in peers.items() if "client" in p.roles and n != QUICSTORE]
    parser = argparse.ArgumentParser(
        prog="python -m interop.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--servers", help=f"server peers (default: {','.join(server_peers)})")
    parser.add_argument("--clients", help=f"client peers (default: {','.join(client_peers)})")
    parser.add_argument("--testcases", help=f"test cases (default: all: {','.join(NAMES)})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI subset: test cases marked quick (no delay/loss cases)",
    )
    parser.add_argument(
        "--sanity", action="store_true", help="also run every peer server against every peer client"
    )
    parser.add_argument(
        "--no-quicstore",
        action="store_true",
        help="skip the quicstore cells (with --sanity: peers only)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=INTEROP_DIR / "results",
        help="results folder (default interop/results)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the logs of passing cells too"
    )
    parser.add_argument("--list", action="store_true", help="list peers and test cases")
    args = parser.parse_args(argv)  # fmt: skip

    if args.list:
        for p in peers.values():
            print(f"{p.name:10} {'/'.join(p.roles):14} {p.description}")
            for role, items in p.unsupported.items():
                for t, why in items.items():
                    print(f"{'':10}   {role} {t}: {why}")
        for tc in TESTCASES:
            print(f"{tc.name:14} {'quick' if tc.quick else '     '} {tc.description}")
        return 0

    servers = _names(args.servers, server_peers, list(peers), "server")
    clients = _names(args.clients, client_peers, list(peers), "client")
    tcs = [BY_NAME[n] for n in _names(args.testcases, list(NAMES), list(NAMES), "test case")]
    if args.quick and not args.testcases:
        tcs = [tc for tc in tcs if tc.quick]
    cells_plan = plan(peers, servers, clients, tcs, not args.no_quicstore, args.sanity)
    if not cells_plan:
        print("nothing to run", file=sys.stderr)
        return 2

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.monotonic()
    runner = Runner(args.out, args.keep_logs)
    cells: list[Cell] = []
    try:
        for i, (s, c, tc) in enumerate(cells_plan, 1):
            cell = runner.run_cell(s, c, tc)
            cells.append(cell)
            first = cell.reason.splitlines()[0][:160] if cell.reason else ""
            print(f"[{i}/{len(cells_plan)}] {s.name:>9} <- {c.name:<9} {tc.name:<13} "
                  f"{cell.status:<11} {cell.duration_s:6.1f} s  {first}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted: writing what ran so far", file=sys.stderr)
    finally:
        runner.close()
    total = time.monotonic() - t0
    counts = {k: sum(1 for c in cells if c.status == k) for k in ("pass", "fail", "unsupported")}
    meta = {
        "started": started,
        "mode": "quick" if args.quick else "full",
        "total_s": round(total, 1),
        "counts": counts,
        "peers": {p.name: p.description for p in peers.values()},
        "testcases": {tc.name: tc.description for tc in tcs},
        "planned": len(cells_plan),
    }
    jpath, mpath = write_reports(cells, args.out, meta)
    print(f"\n{counts['pass']} pass, {counts['fail']} fail, {counts['unsupported']} unsupported "
          f"of {len(cells_plan)} planned cells in {total:.1f} s")  # fmt: skip
    for c in cells:
        if c.status == "fail":
            print(f"  FAIL {c.server} <- {c.client} {c.testcase}: {c.reason.splitlines()[0][:300]}")
    print(f"wrote {jpath} and {mpath}")
    return 1 if counts["fail"] or len(cells) < len(cells_plan) else 0


if __name__ == "__main__":
    sys.exit(main())
