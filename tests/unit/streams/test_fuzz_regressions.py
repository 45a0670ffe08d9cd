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
    saved_crashes,
    target_of,
)

#: Saved inputs that fail on today's code -> (what goes wrong, what it raises). Every finding so
#: far (NUL and other controls, ids over 512 characters, deep nesting, huge integers, lone
#: surrogates) was fixed by the parser rewrite of issue 6.
OPEN: dict[str, tuple[str, type[Exception]]] = {}
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
