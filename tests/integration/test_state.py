"""Connector state on SQLite and PostgreSQL: the same code, the same tests."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, String, Table

from connectors.base import RemoteFile
from connectors.poller import Candidate, CleanupAction, CleanupStage, CleanupStep, Outcome
from streams.db import create_engine
from streams.state import ConnectorState, OutcomeRecord


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
    # an outcome or a step about the old version does not touch the new one
    assert (
        await state.record_outcome(
            "acme", "sftp", "meta/a.xml", v1.file.version_id, Outcome.PROCESSED, now
        )
        is OutcomeRecord.NOT_CURRENT
    )
    await state.record_cleanup("acme", "sftp", _step(v1, CleanupAction.DELETED, cleaned=now))
    known = await state.load_known("acme", "sftp")
    assert known["meta/a.xml"].version == 2 and not known["meta/a.xml"].cleaned
    assert known["meta/a.xml"].stage is None
    await state.record_cleanup("acme", "sftp", _step(v2, CleanupAction.DELETED, cleaned=now))
    known = await state.load_known("acme", "sftp")
    assert known["meta/a.xml"].cleaned
    assert await state.count() == 1


def _step(
    c: Candidate,
    action: CleanupAction,
    stage: CleanupStage | None = None,
    *,
    cleaned: dt.datetime | None = None,
    moved_to: str | None = None,
) -> CleanupStep:
    return CleanupStep(
        c.file.path,
        c.file.version_id,
        action,
        stage,
        cleaned.timestamp() if cleaned else None,
        moved_to,
    )


async def test_clean_up_state_survives_a_restart(state: ConnectorState) -> None:
    """Verdicts and clean-up steps load back exactly as the poller left them."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=123000)
    pending, settling, recheck = (_candidate(f"{n}.csv", 10) for n in ("p", "s", "r"))
    await state.record_announced(
        "acme", "local", [(pending, "f1"), (settling, "f2"), (recheck, "f3")], now
    )
    for c, outcome in ((pending, Outcome.PARTIAL), (settling, Outcome.PROCESSED)):
        assert (
            await state.record_outcome(
                "acme", "local", c.file.path, c.file.version_id, outcome, now
            )
            is OutcomeRecord.RECORDED
        )
    await state.record_outcome(
        "acme", "local", "r.csv", recheck.file.version_id, Outcome.INCOMPLETE, now
    )
    moved_at = now + dt.timedelta(seconds=5)
    await state.record_cleanup(
        "acme",
        "local",
        _step(
            settling,
            CleanupAction.MOVED_PROCESSED,
            CleanupStage.SETTLING,
            cleaned=moved_at,
            moved_to="processed/s.csv",
        ),
    )

    async with ConnectorState(state.url) as fresh:  # a new process
        known = await fresh.load_known("acme", "local")
    p, s, r = known["p.csv"], known["s.csv"], known["r.csv"]
    assert (p.outcome, p.stage, p.cleaned_at, p.moved_to) == (
        Outcome.PARTIAL,
        CleanupStage.PENDING,
        None,
        None,
    )
    assert p.decided_at == now.timestamp()
    assert (p.size, p.mtime) == (10, 1_700_000_000.0)
    assert (s.stage, s.cleaned_at, s.moved_to) == (
        CleanupStage.SETTLING,
        moved_at.timestamp(),
        "processed/s.csv",
    )
    assert (r.outcome, r.stage) == (Outcome.INCOMPLETE, CleanupStage.RECHECK)


async def test_a_verdict_is_recorded_once_and_an_older_one_never_wins(
    state: ConnectorState,
) -> None:
    now = dt.datetime.now(dt.UTC)
    c = _candidate("a.csv", 10)
    await state.record_announced("acme", "local", [(c, "f1")], now)
    vid = c.file.version_id
    first = await state.record_outcome("acme", "local", "a.csv", vid, Outcome.INCOMPLETE, now)
    again = await state.record_outcome("acme", "local", "a.csv", vid, Outcome.INCOMPLETE, now)
    later = now + dt.timedelta(seconds=300)
    final = await state.record_outcome("acme", "local", "a.csv", vid, Outcome.PARTIAL, later)
    stale = await state.record_outcome("acme", "local", "a.csv", vid, Outcome.INCOMPLETE, now)
    assert [first, again, final, stale] == [
        OutcomeRecord.RECORDED,
        OutcomeRecord.DUPLICATE,
        OutcomeRecord.RECORDED,
        OutcomeRecord.DUPLICATE,
    ]
    known = (await state.load_known("acme", "local"))["a.csv"]
    assert (known.outcome, known.stage) == (Outcome.PARTIAL, CleanupStage.PENDING)


async def test_re_announcing_an_unchanged_version_keeps_its_verdict(
    state: ConnectorState,
) -> None:
    """The re-check of an incomplete file: a late copy of the old verdict stays a duplicate."""
    now = dt.datetime.now(dt.UTC)
    c = _candidate("a.csv", 10)
    await state.record_announced("acme", "local", [(c, "f1")], now)
    vid = c.file.version_id
    await state.record_outcome("acme", "local", "a.csv", vid, Outcome.INCOMPLETE, now)
    again = Candidate(c.file, 1, recheck=True)
    await state.record_announced("acme", "local", [(again, "f1")], now)
    known = (await state.load_known("acme", "local"))["a.csv"]
    assert (known.outcome, known.stage) == (Outcome.INCOMPLETE, None)
    late = await state.record_outcome("acme", "local", "a.csv", vid, Outcome.INCOMPLETE, now)
    assert late is OutcomeRecord.DUPLICATE

    new = _candidate("a.csv", 11, version=2)  # a changed file starts over
    await state.record_announced("acme", "local", [(new, "f2")], now)
    known = (await state.load_known("acme", "local"))["a.csv"]
    assert (known.outcome, known.decided_at, known.version) == (None, None, 2)


async def test_a_database_from_before_the_clean_up_columns_is_upgraded(database_url: str) -> None:
    """An existing connector_files table without the new columns gains them at start."""
    engine = create_engine(database_url)
    old = Table(  # connector_files as the previous release created it
        "connector_files",
        MetaData(),
        Column("tenant", String(64), primary_key=True),
        Column("connector", String(64), primary_key=True),
        Column("path", String(1024), primary_key=True),
        Column("version_id", String(64), nullable=False),
        Column("version", Integer, nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("mtime", Float, nullable=False),
        Column("checksum", String(128)),
        Column("file_id", String(64), nullable=False),
        Column("announced_at", DateTime(timezone=True), nullable=False),
        Column("cleanup_action", String(32)),
        Column("cleaned_at", DateTime(timezone=True)),
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(old.create)
            await conn.execute(
                old.insert(),
                [
                    {
                        "tenant": "acme",
                        "connector": "local",
                        "path": "a.csv",
                        "version_id": "v1",
                        "version": 1,
                        "size": 3,
                        "mtime": 1.0,
                        "file_id": "f1",
                        "announced_at": dt.datetime.now(dt.UTC),
                    }
                ],
            )
    finally:
        await engine.dispose()
    async with ConnectorState(database_url) as upgraded:
        known = await upgraded.load_known("acme", "local")
        assert (known["a.csv"].version_id, known["a.csv"].stage) == ("v1", None)
        now = dt.datetime.now(dt.UTC)
        assert (
            await upgraded.record_outcome("acme", "local", "a.csv", "v1", Outcome.PROCESSED, now)
            is OutcomeRecord.RECORDED
        )
