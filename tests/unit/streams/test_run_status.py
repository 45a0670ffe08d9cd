"""How an import run's status follows from its files' verdicts."""

from __future__ import annotations

from streams.control.executions import Counts, RunFile
from streams.scheduler import import_status


def f(path: str, outcome: str, reason: str | None = None) -> RunFile:
    return RunFile(file_id=path, connector="drop", path=path, outcome=outcome, reason=reason)


def test_no_file_and_all_processed_are_success() -> None:
    assert import_status([], Counts()) == ("success", None)
    assert import_status([f("a", "processed")], Counts(rows_accepted=3)) == ("success", None)


def test_every_file_rejected_is_handler_failed_naming_them() -> None:
    status, error = import_status(
        [f("a.csv", "invalid", "bad_header"), f("b.csv", "invalid", "encoding")], Counts()
    )
    assert status == "handler_failed"
    assert error is not None and "a.csv (invalid: bad_header)" in error and "b.csv" in error


def test_some_rows_or_files_rejected_is_partial_success() -> None:
    status, error = import_status(
        [f("a.csv", "processed"), f("b.csv", "partial")], Counts(rows_accepted=5, rows_rejected=2)
    )
    assert status == "partial_success"
    assert error is not None and error.startswith("2 row(s) rejected") and "b.csv" in error
