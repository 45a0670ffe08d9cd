"""Bulk inserts on the real PostgreSQL server (streams/cases/bulk.py): ``COPY`` for plain
inserts, and a conflict clause that still decides each row when ``COPY`` meets a conflict."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from servers.postgres import PostgresServer
from sqlalchemy import Column, MetaData, String, Table, func, select, text

from streams.cases import bulk
from streams.cases.store import CaseStore, applied_deliveries, cases, outbox
from streams.codec import AvroCodec
from streams.topics import Topics

NOW = dt.datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture
async def store(pg_server: PostgresServer) -> AsyncIterator[CaseStore]:
    pg_server.reset()
    async with CaseStore(pg_server.async_url(), AvroCodec(), Topics("t"), lambda _t: ()) as s:
        yield s


def _case(cid: str, version: int, channel: str = "voice") -> dict[str, Any]:
    return {
        "case_id": cid,
        "tenant": "acme",
        "source_system": "crm",
        "external_interaction_id": f"ext-{cid}",
        "version": version,
        "content_hash": f"h{version}",
        "channel": channel,
        "conversation": '{"a":"é\\u0000"}',
        "source": None,
        "opened_at": NOW,
        "updated_at": NOW,
    }


async def _stored_cases(store: CaseStore) -> dict[str, tuple[int, str]]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(cases.c.case_id, cases.c.version, cases.c.channel))).all()
    return {r.case_id: (r.version, r.channel) for r in rows}


async def test_a_plain_insert_copies_every_type_as_given(store: CaseStore) -> None:
    rows = [
        {
            "topic": "t.results",
            "key": f"case-{i}".encode(),
            "value": bytes([0, 255, i % 256]),
            "created_at": NOW,
            "published_at": None,
            "announced_at": NOW if i % 2 else None,
            "result_key": None if i % 2 else f"k{i}",
        }
        for i in range(500)
    ]
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))  # the transaction starts with a statement
        await bulk.insert(conn, outbox, rows)
    async with store.engine.connect() as conn:
        got = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
    assert [(r.key, r.value, r.announced_at, r.result_key) for r in got] == [
        (r["key"], r["value"], r["announced_at"], r["result_key"]) for r in rows
    ]
    assert {r.created_at for r in got} == {NOW}  # microseconds and zone kept


async def test_a_conflict_clause_decides_each_row_when_copy_meets_a_conflict(
    store: CaseStore,
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))
        await bulk.insert(conn, cases, [_case("A", 1), _case("B", 1)])
    keep = bulk.do_update(["case_id"], [c for c in _case("A", 2) if c != "opened_at"])
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))
        # A and B exist: COPY fails on them, the clause then updates both and inserts C ...
        await bulk.insert(
            conn, cases, [_case("A", 2, "chat"), _case("B", 2), _case("C", 1)], on_conflict=keep
        )
        # ... and the caller's transaction is still usable afterwards
        await bulk.insert(
            conn,
            applied_deliveries,
            [{"delivery_key": "file:f:1", "tenant": "acme", "case_id": "C", "applied_at": NOW}],
        )
    assert await _stored_cases(store) == {"A": (2, "chat"), "B": (2, "voice"), "C": (1, "voice")}
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))  # known conflicts: the clause alone, no COPY
        await bulk.insert(conn, cases, [_case("B", 3)], on_conflict=keep, conflicts_expected=True)
    assert (await _stored_cases(store))["B"] == (3, "voice")
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))
        await bulk.insert(
            conn, cases, [_case("A", 9), _case("D", 1)], on_conflict=bulk.do_nothing(["case_id"])
        )
    assert await _stored_cases(store) == {
        "A": (2, "chat"),
        "B": (3, "voice"),
        "C": (1, "voice"),
        "D": (1, "voice"),
    }
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(applied_deliveries))).scalar()


async def test_a_plain_insert_of_an_existing_key_raises_duplicate_row_and_writes_nothing(
    store: CaseStore,
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("SELECT 1"))
        await bulk.insert(conn, cases, [_case("A", 1)])
    with pytest.raises(bulk.DuplicateRow, match="cases"):
        async with store.engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await bulk.insert(conn, cases, [_case("E", 1), _case("A", 1)])
    assert await _stored_cases(store) == {"A": (1, "voice")}


async def test_a_single_column_is_copied_row_by_row(store: CaseStore) -> None:
    """One picked column: each row is still one value, not its characters."""
    one = Table("one_column", MetaData(), Column("name", String))
    async with store.engine.begin() as conn:
        await conn.execute(text("CREATE TEMP TABLE one_column (name text)"))
        rows = [{"name": "ab", "other": 1}, {"name": "c", "other": 2}]
        await bulk.insert(conn, one, rows, columns=["name"])
        got = (await conn.execute(text("SELECT name FROM one_column ORDER BY name"))).scalars()
        assert list(got) == ["ab", "c"]
