"""Readiness: named checks run together, each bounded; the report names the failing ones."""

from __future__ import annotations

import asyncio

import pytest

from streams.health import NotReady, Readiness


async def _ok() -> str:
    return "fine"


async def _refused() -> str:
    raise NotReady("broker down")


async def _leaks() -> str:
    raise OSError("connect to db.internal:5432 as user callstream failed")


async def _hangs() -> str:
    await asyncio.sleep(60)
    return "never"


async def test_ready_only_when_every_check_passes() -> None:
    readiness = Readiness(timeout=0.2)
    assert (await readiness.evaluate()).ready  # nothing to depend on
    readiness.add("kafka", _ok)
    readiness.add("database", _refused)
    readiness.add("processors", _hangs)
    report = await readiness.evaluate()
    assert not report.ready
    body = report.as_dict()
    assert body["status"] == "not_ready"
    assert body["failing"] == ["database", "processors"]
    assert body["checks"]["kafka"] == {"ok": True, "detail": "fine"}
    assert body["checks"]["database"]["detail"] == "broker down"
    assert "no answer within 0.2s" in body["checks"]["processors"]["detail"]
    readiness.remove("database")
    readiness.remove("processors")
    assert (await readiness.evaluate()).as_dict()["status"] == "ready"


async def test_an_unexpected_error_shows_its_type_only_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/readyz is open to anyone who reaches the port: a driver's message (hosts, users, SQL)
    stays in the log."""
    readiness = Readiness(timeout=0.2)
    readiness.add("database", _leaks)
    body = (await readiness.evaluate()).as_dict()
    assert body["failing"] == ["database"]
    detail = body["checks"]["database"]["detail"]
    assert detail == "OSError (the service log has the details)"
    assert "db.internal" not in str(body)
    assert "db.internal:5432" in caplog.text and "database" in caplog.text


def test_names_are_unique() -> None:
    readiness = Readiness()
    readiness.add("kafka", _ok)
    with pytest.raises(ValueError, match="registered already"):
        readiness.add("kafka", _ok)
    assert readiness.names == ["kafka"]
