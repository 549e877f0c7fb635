"""Markdown tables and the JSON document of a bench run.

Main table: one row per system; MB/s (10**6 bytes/s) for (a), (b), (d), (e), (f); p50/p99
latency in ms for sequential (c); requests/s for (c) with 32 in flight; client/server CPU
seconds per GB (10**9 bytes) for (a) and (d); peak RSS in MiB of each side (largest over the
row's cells). Then two ratio tables (row value / baseline value, same columns) against
"stock aioquic h3" and "aiohttp HTTPS uvloop".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tools.bench.model import Cell
from tools.bench.systems.base import System

BASELINES = (("aioquic", "stock aioquic h3"), ("aiohttp-uvloop", "aiohttp HTTPS uvloop"))
"""(system key, label) of the rows the ratio tables divide by."""

Values = tuple[float | None, ...]


@dataclass(frozen=True)
class Column:
    """A table column: header and how to pull its value(s) from a row's cells."""

    header: str
    values: Callable[[dict[str, Cell]], Values]
    status_of: str | None = None
    """Workload id whose status ("n/a", "timeout", ...) replaces missing values."""
    digits: int = 1


def _get(cells: dict[str, Cell], wl: str, key: str) -> float | None:
    cell = cells.get(wl)
    if cell is None or cell.status != "ok":
        return None
    return cell.summary.get(key)


def _max(cells: dict[str, Cell], key: str) -> float | None:
    vals = [c.summary.get(key) for c in cells.values() if c.status == "ok"]
    present = [v for v in vals if v is not None]
    return max(present) if present else None


def _lat(cells: dict[str, Cell]) -> Values:
    p50, p99 = _get(cells, "c1", "p50_ms"), _get(cells, "c1", "p99_ms")
    if p50 is None and _get(cells, "c1", "mean_ms") is not None:
        return (_get(cells, "c1", "mean_ms"), None)  # shown as "mean X"
    return (p50, p99)


COLUMNS = [
    Column("(a) MB/s", lambda c: (_get(c, "a", "mb_per_s"),), "a"),
    Column("(b) MB/s", lambda c: (_get(c, "b", "mb_per_s"),), "b"),
    Column("(c) seq p50/p99 ms", _lat, "c1", digits=3),
    Column("(c) 32 req/s", lambda c: (_get(c, "c32", "req_per_s"),), "c32", digits=0),
    Column("(d) MB/s", lambda c: (_get(c, "d", "mb_per_s"),), "d"),
    Column("(e) MB/s", lambda c: (_get(c, "e", "mb_per_s"),), "e", digits=2),
    Column("(f) MB/s", lambda c: (_get(c, "f", "mb_per_s"),), "f"),
    Column(
        "CPU s/GB (a) cli/srv",
        lambda c: (_get(c, "a", "client_cpu_s_per_gb"), _get(c, "a", "server_cpu_s_per_gb")),
        "a",
        digits=2,
    ),
    Column(
        "CPU s/GB (d) cli/srv",
        lambda c: (_get(c, "d", "client_cpu_s_per_gb"), _get(c, "d", "server_cpu_s_per_gb")),
        "d",
        digits=2,
    ),
    Column(
        "peak RSS MiB cli/srv",
        lambda c: (_max(c, "client_rss_mib"), _max(c, "server_rss_mib")),
        digits=0,
    ),
]


def _fmt(v: float | None, digits: int) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def _status_text(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    return cell.status if cell.status in ("n/a", "timeout", "error", "interrupted") else "–"


def _cell_text(col: Column, cells: dict[str, Cell]) -> str:
    vals = col.values(cells)
    if all(v is None for v in vals):
        if not col.status_of:
            return "–"
        cell = cells.get(col.status_of)
        partial = cell.summary.get("partial_mb_per_s") if cell is not None else None
        if partial is not None and col.header.endswith("MB/s"):
            return f"timeout (≥{partial:,.{col.digits}f})"
        return _status_text(cell)
    if col.status_of == "c1" and vals[1] is None:
        return f"mean {_fmt(vals[0], col.digits)}"
    text = "/".join(_fmt(v, col.digits) for v in vals)
    cell = cells.get(col.status_of) if col.status_of else None
    if cell is not None and cell.reason:
        text += "*"
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def render(systems: list[System], cells: list[Cell]) -> str:
    """The main table, two ratio tables and the notes, as markdown."""
    by_sys: dict[str, dict[str, Cell]] = {}
    for c in cells:
        by_sys.setdefault(c.system, {})[c.workload] = c
    shown = [s for s in systems if s.key in by_sys]
    header = ["system", *(c.header for c in COLUMNS)]
    rows = [[s.name, *(_cell_text(col, by_sys[s.key]) for col in COLUMNS)] for s in shown]
    out = [_table(header, rows)]

    for key, label in BASELINES:
        out.append(f"\nRatios vs {label} (row / baseline; >1 = more MB/s, req/s, ms, s/GB, MiB)")
        base = by_sys.get(key)
        if base is None:
            out.append(f"(baseline {label!r} not in this run)")
            continue
        ratio_rows = []
        for s in shown:
            row = [s.name]
            for col in COLUMNS:
                mine, theirs = col.values(by_sys[s.key]), col.values(base)
                if col.status_of == "c1" and (mine[1] is None) != (theirs[1] is None):
                    mine, theirs = mine[:1], theirs[:1]  # mean vs p50: compare first values
                parts = [
                    f"{a / b:.2f}" if a is not None and b else "–"
                    for a, b in zip(mine, theirs, strict=True)
                ]
                row.append("/".join(parts))
            ratio_rows.append(row)
        out.append(_table(header, ratio_rows))

    notes = ["", "Notes:"]
    for s in shown:
        notes.append(f"- {s.name}: {s.notes}")
    for s in shown:
        grouped: dict[tuple[str, str], list[str]] = {}
        for c in by_sys[s.key].values():
            if c.reason:
                grouped.setdefault((c.status, c.reason), []).append(c.workload)
        for (status, reason), wls in grouped.items():
            notes.append(f"- {s.name} ({', '.join(wls)}) {status}: {reason}"[:300])
    notes.append("- *: see the note for that cell (fewer repetitions or a failed one).")
    return "\n".join(out + notes)
