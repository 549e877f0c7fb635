"""Replays the checked-in fuzz corpus (tools/fuzz/corpus) through the fuzz target."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.fuzz.target import fuzz_one

CORPUS = sorted((Path(__file__).resolve().parents[2] / "tools" / "fuzz" / "corpus").iterdir())


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_input_keeps_the_failure_contract(path: Path) -> None:
    fuzz_one(path.read_bytes())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_scripts_keep_the_failure_contract(data: bytes) -> None:
    fuzz_one(data)
