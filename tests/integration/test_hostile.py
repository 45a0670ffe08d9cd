"""CI's slice of the hostile corpus: 1,000 files through a real ``callstream run`` process.

It fails on a crash, a stall (a safe name never announced, an announced file without a final
outcome) or any row not accounted for; the report (files, outcomes by reason, rows, peak RSS,
throughput) is printed into the CI log either way. ``make hostile`` runs the 10,000-file corpus.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))

from run import run_corpus

SLICE = 1000


def test_a_1000_file_hostile_slice_is_accounted_for(
    capsys: pytest.CaptureFixture[str], kafka: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CALLSTREAM_HOSTILE_SEED", "1"))
    report = run_corpus(SLICE, tmp_path, seed=seed, bootstrap=kafka, say=lambda _line: None)
    with capsys.disabled():  # the figures belong in the CI log
        print(f"\n{report.text()}")
    assert report.files_written == SLICE
    if not report.ok:
        checks = sorted({f.check for f in report.failures})
        pytest.fail(
            f"{len(report.failures)} failed checks ({', '.join(checks)}): see the report above; "
            f"service log {report.log_path}",
            pytrace=False,
        )
