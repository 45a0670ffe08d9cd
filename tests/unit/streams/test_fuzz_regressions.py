"""Replay every input the fuzzers found (``tests/fuzz/crashes/``) through the harness's checks.

Each saved input is one finding: the parser or path code raised an exception it must not raise,
or an output broke a property (:mod:`invariants` in ``tests/fuzz``). Findings not fixed yet are
``xfail(strict=True)`` with what goes wrong: once fixed, the test passes, pytest reports
XPASS as a failure, and the entry in :data:`OPEN` goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))

from invariants import (
    TARGETS,
    InvariantBroken,
    saved_crashes,
    target_of,
)

_LONG_ID = "a 513-character id is accepted; the case store's column holds 512"
#: Saved inputs that fail on today's code -> (what goes wrong, what it raises); issue 6, item 8.
OPEN: dict[str, tuple[str, type[Exception]]] = {
    "csv-nul-in-id": ("a NUL in the id is accepted (PostgreSQL refuses NUL)", InvariantBroken),
    "csv-id-over-512": (_LONG_ID, InvariantBroken),
    "tsv-nul-in-metadata": ("a NUL in an unmapped column is accepted", InvariantBroken),
    "tsv-id-over-512": (_LONG_ID, InvariantBroken),
    "chat-deep-nesting": ("JSON nested 1,000 deep is not FileRejected", RecursionError),
    "chat-huge-integer": ("a 4,301-digit number is not FileRejected", ValueError),
    "chat-lone-surrogate": ("a lone surrogate is accepted, cannot be encoded", InvariantBroken),
    "chat-nul-in-text": ("a NUL (\\u0000) in a turn's text is accepted", InvariantBroken),
    "chat-id-over-512": (_LONG_ID, InvariantBroken),
}
CRASHES = saved_crashes()


def _case(crash: Path) -> object:
    marks = []
    if crash.name in OPEN:
        reason, raises = OPEN[crash.name]
        marks.append(pytest.mark.xfail(strict=True, reason=reason, raises=raises))
    return pytest.param(crash, id=crash.name, marks=marks)


def test_every_saved_input_names_a_target_and_open_entries_exist() -> None:
    assert CRASHES, "no saved fuzz inputs found"
    assert {target_of(c) for c in CRASHES} <= set(TARGETS)
    assert set(OPEN) <= {c.name for c in CRASHES}


@pytest.mark.parametrize("crash", [_case(c) for c in CRASHES])
def test_saved_fuzz_input_holds_every_property(crash: Path) -> None:
    TARGETS[target_of(crash)](crash.read_bytes())
