"""Connector state on SQLite and PostgreSQL: the same code, the same tests."""

from __future__ import annotations

import datetime as dt

from connectors.base import RemoteFile
from connectors.poller import Candidate, CleanupAction
from streams.state import ConnectorState


def _candidate(path: str, size: int, version: int = 1) -> Candidate:
    return Candidate(RemoteFile(path, size, 1_700_000_000.0), version)


async def test_announced_versions_survive_a_restart(state: ConnectorState) -> None:
    now = dt.datetime.now(dt.UTC)
    batch = [(_candidate(f"calls/{i}.csv", i), f"id{i}") for i in range(1200)]
    await state.record_announced("acme", "sftp", batch, now)
    await state.record_announced("other", "sftp", [(_candidate("calls/0.csv", 5), "x")], now)

    fresh = ConnectorState(state.url)  # a new process
    async with fresh:
        known = await fresh.load_known("acme", "sftp")
    assert len(known) == 1200
    assert (
        known["calls/7.csv"].version_id == RemoteFile("calls/7.csv", 7, 1_700_000_000.0).version_id
    )
    assert known["calls/7.csv"].version == 1
    assert not known["calls/7.csv"].cleaned
    assert await state.count("acme") == 1200
    assert await state.count("other") == 1


async def test_new_version_replaces_the_row_and_cleanup_is_remembered(
    state: ConnectorState,
) -> None:
    now = dt.datetime.now(dt.UTC)
    v1 = _candidate("meta/a.xml", 10)
    await state.record_announced("acme", "sftp", [(v1, "f1")], now)
    v2 = _candidate("meta/a.xml", 20, version=2)
    await state.record_announced("acme", "sftp", [(v2, "f2")], now)
    # an outcome about the old version does not mark the new one cleaned
    await state.record_cleanup(
        "acme", "sftp", "meta/a.xml", v1.file.version_id, CleanupAction.MOVED_PROCESSED, now
    )
    known = await state.load_known("acme", "sftp")
    assert known["meta/a.xml"].version == 2 and not known["meta/a.xml"].cleaned
    await state.record_cleanup(
        "acme", "sftp", "meta/a.xml", v2.file.version_id, CleanupAction.MOVED_PROCESSED, now
    )
    known = await state.load_known("acme", "sftp")
    assert known["meta/a.xml"].cleaned
    assert await state.count() == 1
