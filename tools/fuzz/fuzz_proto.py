"""Coverage-guided fuzzing of the protocol core with atheris (longer runs than the tests).

    pip install atheris
    python tools/fuzz/fuzz_proto.py tools/fuzz/corpus -max_total_time=300

New crashing inputs are written by libFuzzer to the current folder; minimise them and add
them to tools/fuzz/corpus/, where tests/tools/test_fuzz_corpus.py replays every file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

with atheris.instrument_imports():
    from tools.fuzz.target import fuzz_one


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
