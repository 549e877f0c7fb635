"""Hold the spec, the code and the test vectors in agreement.

Checks that the codepoint tables of spec/quicstore.md (error codes, frame types, settings,
stream types, message states) equal the code's enums and tables; that the vectors cover every
frame type with a valid and an invalid case and name only known codes; that every QS_* name
in the spec is in its error table; and that Appendix A is the rendering of the vectors.

    python tools/spec_check.py [--root DIR]      # exit 1 and list problems if any
    python tools/spec_check.py --render          # rewrite Appendix A from the vectors

It imports ``quicstore`` from ``--root`` (default: this checkout), so a copy can be checked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- vectors:begin -->"
END = "<!-- vectors:end -->"


def parse_table(spec: str, marker: str) -> list[dict[str, str]]:
    """The rows of the markdown table that follows ``<!-- registry:marker -->``."""
    start = spec.find(f"<!-- registry:{marker} -->")
    if start < 0:
        raise ValueError(f"spec has no registry:{marker} table")
    lines = spec[start:].splitlines()[1:]
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], [r for r in rows[2:]]
    return [dict(zip(header, row, strict=True)) for row in body]


def _int(text: str) -> int:
    text = text.replace("`", "").strip()
    if text == "2^62-1":
        return (1 << 62) - 1
    return int(text, 0)


def render_appendix(frames: dict[str, Any], exchanges: dict[str, Any]) -> str:
    """Appendix A's tables, rendered from the vector files."""
    out = [
        BEGIN,
        "",
        "### A.1. Valid Frames",
        "",
        "| Name | Wire (hex) | Decoded |",
        "|---|---|---|",
    ]
    for v in frames["valid"]:
        decoded = json.dumps(v["frame"], separators=(",", ":"), ensure_ascii=False)
        suffix = " (decode only)" if v.get("decode_only") else ""
        out.append(f"| {v['name']}{suffix} | `{v['hex']}` | `{decoded}` |")
    out += [
        "",
        "### A.2. Invalid Frames",
        "",
        "Each is fed to a frame reader followed by the FIN.",
        "",
        "| Name | Wire (hex) | Error |",
        "|---|---|---|",
    ]
    for v in frames["invalid"]:
        out.append(f"| {v['name']} | `{v['hex']}` | {v['error']} |")
    out += [
        "",
        "### A.3. Scripted Exchanges",
        "",
        "The full scripts, with every byte sent and every event, are in "
        "[vectors/exchanges.json](vectors/exchanges.json).",
        "",
        "| Exchange | Role | What it shows |",
        "|---|---|---|",
    ]
    for e in exchanges["exchanges"]:
        out.append(f"| {e['name']} | {e['role']} | {e['description']} |")
    out += ["", END]
    return "\n".join(out)


def check(root: Path) -> list[str]:
    """Every disagreement between spec, code and vectors under ``root``."""
    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == "quicstore" or m.startswith("quicstore.")]:
        del sys.modules[name]
    codes = importlib.import_module("quicstore.proto.codes")
    settings_mod = importlib.import_module("quicstore.proto.settings")
    state = importlib.import_module("quicstore.proto.state")
    varint = importlib.import_module("quicstore.proto.varint")
    problems: list[str] = []
    spec = (root / "spec" / "quicstore.md").read_text()
    frames = json.loads((root / "spec" / "vectors" / "frames.json").read_text())
    exchanges = json.loads((root / "spec" / "vectors" / "exchanges.json").read_text())

    def compare(what: str, spec_map: dict[str, int], code_map: dict[str, int]) -> None:
        for name in sorted(spec_map.keys() | code_map.keys()):
            s, c = spec_map.get(name), code_map.get(name)
            if s != c:
                s_text = "missing" if s is None else hex(s)
                c_text = "missing" if c is None else hex(c)
                problems.append(f"{what} {name}: spec {s_text}, code {c_text}")

    error_rows = parse_table(spec, "error-codes")
    spec_errors = {r["Name"]: _int(r["Code"]) for r in error_rows}
    compare("error code", spec_errors, {e.name: int(e) for e in codes.ErrorCode})
    for name, value in spec_errors.items():
        if value not in codes.ERROR_CODE_BLOCK:
            problems.append(f"error code {name} 0x{value:x} is outside the 0x5100 block")
    if len(set(spec_errors.values())) != len(spec_errors):
        problems.append("two error codes share a value")
    compare(
        "frame type",
        {r["Name"]: _int(r["Type"]) for r in parse_table(spec, "frame-types")},
        {t.name: int(t) for t in codes.FrameType},
    )
    compare(
        "stream type",
        {r["Name"]: _int(r["Stream Type"]) for r in parse_table(spec, "stream-types")},
        {t.name: int(t) for t in codes.StreamType},
    )
    setting_rows = parse_table(spec, "settings")
    compare(
        "setting",
        {r["Name"]: _int(r["Identifier"]) for r in setting_rows},
        {s.name: int(s) for s in codes.SettingId},
    )
    defaults = settings_mod.Settings()
    for row in setting_rows:
        attr = row["Name"].lower()
        if hasattr(defaults, attr) and getattr(defaults, attr) != _int(row["Default"]):
            problems.append(
                f"setting {row['Name']} default: spec {row['Default']}, code "
                f"{getattr(defaults, attr)}"
            )
        bounds = re.search(r"(\d+) to (\S+)", row["Allowed"])
        sid = codes.SettingId.__members__.get(row["Name"])
        code_range = settings_mod._RANGES.get(sid) if sid is not None else None
        if bounds and code_range is not None:
            spec_range = (_int(bounds.group(1)), _int(bounds.group(2)))
            if spec_range != code_range:
                problems.append(
                    f"setting {row['Name']} range: spec {spec_range}, code {code_range}"
                )

    spec_states = {
        (r["State"], r["Input"]): r["Next State"] for r in parse_table(spec, "message-states")
    }
    code_states = {(s.value, i.value): n.value for (s, i), n in state.TRANSITIONS.items()}
    for key in sorted(spec_states.keys() | code_states.keys()):
        if spec_states.get(key) != code_states.get(key):
            problems.append(
                f"transition {key}: spec {spec_states.get(key)}, code {code_states.get(key)}"
            )

    for name in sorted(set(re.findall(r"\bQS_[A-Z_]+\b", spec)) - spec_errors.keys()):
        problems.append(f"spec mentions {name}, which is not in its error table")

    type_names = {int(t): t.name for t in codes.FrameType}
    valid_types = {v["frame"]["type"] for v in frames["valid"]}
    invalid_types = set()
    for v in frames["invalid"]:
        decoded = varint.decode_varint(bytes.fromhex(v["hex"]), 0)
        if decoded is not None and decoded[0] in type_names:
            invalid_types.add(type_names[decoded[0]])
        if v["error"] not in spec_errors:
            problems.append(f"vector {v['name']!r} names unknown error {v['error']}")
    for name in type_names.values():
        if name not in valid_types:
            problems.append(f"no valid vector for frame type {name}")
        if name not in invalid_types:
            problems.append(f"no invalid vector for frame type {name}")
    exchange_codes = set(re.findall(r'"(QS_[A-Z_]+)"', json.dumps(exchanges)))
    for name in sorted(exchange_codes - spec_errors.keys()):
        problems.append(f"exchanges name unknown error {name}")

    rendered = render_appendix(frames, exchanges)
    begin, end = spec.find(BEGIN), spec.find(END)
    if begin < 0 or end < 0 or spec[begin : end + len(END)] != rendered:
        problems.append("Appendix A differs from the vectors: run tools/spec_check.py --render")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--render", action="store_true", help="rewrite Appendix A and exit")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if args.render:
        spec_path = root / "spec" / "quicstore.md"
        spec = spec_path.read_text()
        frames = json.loads((root / "spec" / "vectors" / "frames.json").read_text())
        exchanges = json.loads((root / "spec" / "vectors" / "exchanges.json").read_text())
        begin, end = spec.index(BEGIN), spec.index(END)
        spec_path.write_text(
            spec[:begin] + render_appendix(frames, exchanges) + spec[end + len(END) :]
        )
        print(f"rendered Appendix A into {spec_path}")
        return 0
    problems = check(root)
    for problem in problems:
        print(f"spec-check: {problem}")
    if not problems:
        print("spec-check: spec, code and vectors agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
