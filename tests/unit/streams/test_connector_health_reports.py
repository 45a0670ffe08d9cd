"""Connector health reports: one row per connector, overwritten by each report, read per tenant
(SQLite here; PostgreSQL in tests/integration/test_connector_health.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from streams.connector_health import HealthReporter, read_reports
from streams.state import ConnectorState

T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


def _status(state: str, failures: int = 0, error: str | None = None) -> dict[str, Any]:
    return {
        "state": state,
        "last_error": error,
        "last_error_kind": "network" if error else None,
        "last_success": T0,
        "consecutive_failures": failures,
        "announced_total": 3,
    }


async def test_reports_overwrite_per_connector_and_are_read_per_tenant(tmp_path: Path) -> None:
    statuses = [("acme", "drop", _status("ok")), ("other", "drop", _status("ok"))]
    async with ConnectorState(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}") as state:
        reporter = HealthReporter(state.engine, lambda: statuses, "host:1:abc")
        assert await reporter.report_once() == 2
        first = (await read_reports(state.engine, "acme", ["drop", "absent"]))["drop"]
        assert first["state"] == "ok" and first["worker"] == "host:1:abc"
        assert first["last_success"] == T0  # tz-aware, as stored
        statuses[0] = ("acme", "drop", _status("error", 2, "connection refused"))
        await HealthReporter(state.engine, lambda: statuses, "host:2:def").report_once()
        reports = await read_reports(state.engine, "acme", ["drop"])
        assert list(reports) == ["drop"]  # the other tenant's "drop" is not acme's
        now = reports["drop"]
        assert (now["state"], now["consecutive_failures"], now["worker"]) == (
            "error",
            2,
            "host:2:def",
        )
        assert (
            now["last_error"] == "connection refused" and now["reported_at"] > first["reported_at"]
        )
        assert now["reported_at"].tzinfo is not None
        assert await read_reports(state.engine, "acme", []) == {}
