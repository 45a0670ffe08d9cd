"""The case store on SQLite and PostgreSQL: the same code, the same tests."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from support import conversation_record

from streams.analysis.profiles import Parameter, PhrasePresent, Profile
from streams.cases.store import PUBLISHED_VALUE, CaseStore, case_id, outbox
from streams.codec import AvroCodec
from streams.topics import Topics

PROFILE = Profile(
    id="greeting-only",
    version=3,
    parameters=(Parameter(id="greeting", rule=PhrasePresent(phrases=("hello",))),),
)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CaseStore]:
    profiles = {"acme": (PROFILE,)}
    async with CaseStore(
        database_url, AvroCodec(), Topics("t"), lambda t: profiles.get(t, ())
    ) as s:
        yield s


def _conv(ext: str, tenant: str = "acme", note: str = "x") -> dict[str, Any]:
    return conversation_record(
        ext,
        tenant=tenant,
        source_system="five9",
        channel="chat",
        turns=[{"speaker": "agent", "at": None, "text": "Hello there"}],
        metadata={"note": note},
    )


async def _outbox_rows(store: CaseStore) -> list[Any]:
    async with store.engine.connect() as conn:
        stmt = select(outbox.c.id, outbox.c.topic, PUBLISHED_VALUE).order_by(outbox.c.id)
        return list((await conn.execute(stmt)).all())


async def test_opening_is_idempotent_and_changes_make_new_versions(store: CaseStore) -> None:
    first = await store.apply([_conv("A"), _conv("B"), _conv("A")])  # A twice in one batch
    assert first.opened["acme"] == 2 and first.duplicates["acme"] == 1
    again = await store.apply([_conv("A"), _conv("B")])  # redelivery
    assert again.duplicates["acme"] == 2 and not again.opened and not again.updated
    changed = await store.apply([_conv("A", note="escalated")])
    assert changed.updated["acme"] == 1
    assert await store.count_cases() == 2
    assert await store.count_current_results() == 2
    rows = await _outbox_rows(store)
    # A opened, B opened, A updated: a case event and a result each
    assert len(rows) == 6
    codec = AvroCodec()
    results = [
        codec.decode("callstream.AnalysisResult", r.value)
        for r in rows
        if r.topic == "t.analysis-results.v1"
    ]
    a_id = case_id("acme", "five9", "A")
    assert [(r["case_id"], r["result_version"]) for r in results if r["case_id"] == a_id] == [
        (a_id, 1),
        (a_id, 2),
    ]
    assert results[0]["profile_id"] == "greeting-only" and results[0]["profile_version"] == 3
    assert results[0]["idempotency_key"] == f"{results[0]['case_id']}:1:greeting-only:3"


async def test_tenants_are_isolated_even_with_the_same_external_id(store: CaseStore) -> None:
    await store.apply([_conv("SAME", tenant="acme"), _conv("SAME", tenant="globex")])
    assert await store.count_cases("acme") == 1
    assert await store.count_cases("globex") == 1
    assert case_id("acme", "five9", "SAME") != case_id("globex", "five9", "SAME")


async def test_two_writers_of_the_same_deliveries_apply_each_once(database_url: str) -> None:
    """Two stores (two worker processes) apply the same batch at once: the loser of each race
    plans again and absorbs the batch as redelivered (no duplicate case, result or event)."""
    announced = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    batch = [
        {
            **_conv(f"R{i}"),
            "source": {
                "file_id": "f" * 32,
                "connector": "sftp",
                "path": "export.csv",
                "row": i + 1,
                "announced_at": announced,
            },
        }
        for i in range(200)
    ]
    codec, topics = AvroCodec(), Topics("t")
    async with (
        CaseStore(database_url, codec, topics, lambda _t: (PROFILE,)) as one,
        CaseStore(database_url, codec, topics, lambda _t: (PROFILE,)) as two,
    ):
        outcomes = await asyncio.gather(one.apply(batch), two.apply(batch))
        assert sum(o.opened["acme"] for o in outcomes) == 200
        assert sum(o.duplicates["acme"] for o in outcomes) == 200
        assert await one.count_cases("acme") == 200
        assert await one.count_current_results("acme") == 200
        rows = await _outbox_rows(one)
    assert len(rows) == 400  # a case event and a result per case, once
    assert all(bytes(r.value) for r in rows)  # every row publishes a record
