"""The bundle state on SQLite and PostgreSQL: halves recorded at the same moment pair once, and
two sweepers report a missing metadata file once."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import func, select

from streams.cases.store import CaseStore, outbox
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.ingest.bundles import (
    BundleStore,
    BundleSweeper,
    MetadataHalf,
    RecordingHalf,
    Step,
)
from streams.ingest.recordings import RecordingSettings
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.topics import Topics

CALL = dt.datetime(2026, 11, 20, 14, 2, 53, tzinfo=dt.UTC)
PAIRED = RecordingSettings()
MATCHED = RecordingSettings(mode="matched")


def _rec(i: int, uid: str = "joe") -> RecordingHalf:
    return RecordingHalf(
        f"r{i}", "calls", f"{i}.wav", f"file:///m/{i}.wav#sha256=00", "00", 10, None,
        {"uid": uid}, CALL + dt.timedelta(minutes=10 * i), CALL,
    )  # fmt: skip


def _meta(i: int, fields: dict[str, str] | None = None) -> MetadataHalf:
    return MetadataHalf(f"m{i}", "calls", f"{i}.json", fields or {"a": "b"}, None, CALL)


async def test_halves_recorded_at_the_same_moment_pair_exactly_once(database_url: str) -> None:
    async with CaseStore(database_url, AvroCodec(), Topics("t"), lambda _t: ()) as db:
        store = BundleStore(db)

        async def call(i: int) -> list[Step]:
            return list(
                await asyncio.gather(
                    store.add_recording("acme", "five9", f"k{i}", "paired", _rec(i), PAIRED),
                    store.add_metadata("acme", "five9", f"k{i}", "paired", _meta(i), PAIRED),
                )
            )

        calls = await asyncio.gather(*(call(i) for i in range(20)))
    for steps in calls:
        completed = [s for s in steps if s.bundle is not None and s.bundle.complete]
        assert len(completed) == 1  # exactly one of the two halves saw the other


async def test_matched_halves_at_the_same_moment_pair_exactly_once(database_url: str) -> None:
    async with CaseStore(database_url, AvroCodec(), Topics("t"), lambda _t: ()) as db:
        store = BundleStore(db)

        async def call(i: int) -> list[Step]:
            meta = {"uid": f"u{i}", "call_time": (CALL + dt.timedelta(minutes=10 * i)).isoformat()}
            return list(
                await asyncio.gather(
                    store.add_recording(
                        "acme", "five9", f"k{i}", "matched", _rec(i, f"u{i}"), MATCHED
                    ),
                    store.add_matched_metadata("acme", "five9", _meta(i, meta), MATCHED),
                )
            )

        calls = await asyncio.gather(*(call(i) for i in range(10)))
    for steps in calls:
        completed = [s for s in steps if s.bundle is not None and s.bundle.complete]
        assert len(completed) == 1
        assert completed[0].bundle is not None
        assert completed[0].bundle.match_fields == "uid,call_time"


async def test_two_sweepers_report_a_missing_metadata_file_once(
    database_url: str, tmp_path: Path
) -> None:
    codec, topics = AvroCodec(), Topics("t")
    rec = RecordingSettings(metadata_timeout_seconds=60)
    async with CaseStore(database_url, codec, topics, lambda _t: ()) as db:
        store = BundleStore(db)
        await store.add_recording("acme", "five9", "k", "paired", _rec(1), rec)
        later = BundleStore(db, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
        dead = DeadLetters(codec, topics, Metrics(), LocalMediaStore(tmp_path), 1_000_000)
        sweepers = [
            BundleSweeper(later, [("acme", "calls", rec)], dead, Metrics()) for _ in range(2)
        ]
        counts = await asyncio.gather(*(s.sweep() for s in sweepers * 3))
        async with db.engine.connect() as conn:
            queued = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    assert sum(counts) == 1
    assert queued == 1
