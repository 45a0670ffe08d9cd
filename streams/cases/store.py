"""Cases, analysis results, file outcomes and the outbox, in one database transaction per batch.

Exactly-once effects on at-least-once input: :meth:`CaseStore.apply` takes a batch of validated
conversations and, in one transaction,

- opens a case for each new conversation (case id = hash of tenant, source system and external
  interaction id), or updates it (version + 1) when its content changed, or does nothing when
  it is a redelivered or re-uploaded duplicate (counted);
- analyses every opened or updated case with the tenant's profile and stores the result under
  its idempotency key ``case_id:case_version:profile_id:profile_version``;
- writes the CaseEvent and AnalysisResult records to the ``outbox`` table.

:class:`OutboxRelay` publishes outbox rows to Kafka in id order and marks them published. A crash
after the commit publishes them on restart; a crash between publishing and marking publishes them
again with the same keys (at-least-once events, never a duplicate case or result version).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)

from streams.analysis.engine import analyse
from streams.analysis.profiles import Profile, select_profile
from streams.codec import AvroCodec
from streams.db import Database, insert_ignore, metadata, upsert
from streams.kafka import Producer, Record
from streams.metrics import Metrics
from streams.topics import Topics

log = logging.getLogger(__name__)

CASE_EVENT = "callstream.CaseEvent"
ANALYSIS_RESULT = "callstream.AnalysisResult"

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("source_system", String(128), nullable=False),
    Column("external_interaction_id", String(512), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("conversation", Text, nullable=False),  # canonical JSON, without source
    Column("source", Text),  # file and row the current version was read from
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

analysis_results = Table(
    "analysis_results",
    metadata,
    Column("idempotency_key", String(200), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("case_id", String(32), nullable=False),
    Column("case_version", Integer, nullable=False),
    Column("result_version", Integer, nullable=False),
    Column("profile_id", String(64), nullable=False),
    Column("profile_version", Integer, nullable=False),
    Column("overall_score", Float, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("result", LargeBinary, nullable=False),  # the AnalysisResult, Avro-encoded
    Column("analysed_at", DateTime(timezone=True), nullable=False),
    Index("ix_analysis_results_case", "case_id", "result_version"),
)

file_outcomes = Table(
    "file_outcomes",
    metadata,
    Column("file_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("connector", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("version_id", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("rows_accepted", BigInteger, nullable=False),
    Column("rows_rejected", BigInteger, nullable=False),
    Column("reason", String(64)),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), index=True),
    Column("announced_at", DateTime(timezone=True)),  # source file announced: for latency
)


def case_id(tenant: str, source_system: str, external_id: str) -> str:
    """Return the deterministic case id of a conversation."""
    raw = "\x00".join((tenant, source_system, external_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def content_json(conversation: dict[str, Any]) -> str:
    """Canonical JSON of what the conversation says (not where or when it was read)."""
    body = {k: v for k, v in conversation.items() if k != "source"}
    return json.dumps(_jsonable(body), sort_keys=True, separators=(",", ":"))


def content_hash(body_json: str) -> str:
    """Hash the canonical JSON of a conversation."""
    return hashlib.sha256(body_json.encode()).hexdigest()


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


@dataclass
class BatchOutcome:
    """What one :meth:`CaseStore.apply` did, per tenant."""

    opened: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    results: int = 0


class CaseStore(Database):
    """Cases and results in SQLite or PostgreSQL (the same code, see the module doc)."""

    def __init__(
        self,
        url: str,
        codec: AvroCodec,
        topics: Topics,
        profiles: Callable[[str], tuple[Profile, ...]],
    ) -> None:
        super().__init__(url)
        self.codec = codec
        self.topics = topics
        self.profiles = profiles

    async def apply(self, conversations: Sequence[dict[str, Any]]) -> BatchOutcome:
        """Open, update or absorb each conversation and queue its events (one transaction)."""
        out = BatchOutcome()
        if not conversations:
            return out
        now = utcnow()
        keyed = []
        for conv in conversations:
            cid = case_id(conv["tenant"], conv["source_system"], conv["external_interaction_id"])
            body = content_json(conv)
            keyed.append((cid, content_hash(body), body, conv))
        ids = list({cid for cid, _, _, _ in keyed})
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(cases.c.case_id, cases.c.version, cases.c.content_hash).where(
                        cases.c.case_id.in_(ids)
                    )
                )
            ).all()
            current: dict[str, tuple[int, str]] = {
                r.case_id: (r.version, r.content_hash) for r in rows
            }
            case_rows: dict[str, dict[str, Any]] = {}
            result_rows: list[dict[str, Any]] = []
            box: list[dict[str, Any]] = []
            for cid, digest, body, conv in keyed:
                known = current.get(cid)
                if known is not None and known[1] == digest:
                    out.duplicates[conv["tenant"]] += 1
                    continue
                version = 1 if known is None else known[0] + 1
                kind = "opened" if known is None else "updated"
                current[cid] = (version, digest)
                opened_at = case_rows.get(cid, {}).get("opened_at", now)
                case_rows[cid] = {
                    "case_id": cid,
                    "tenant": conv["tenant"],
                    "source_system": conv["source_system"],
                    "external_interaction_id": conv["external_interaction_id"],
                    "version": version,
                    "content_hash": digest,
                    "channel": conv["channel"],
                    "conversation": body,
                    "source": json.dumps(_jsonable(conv["source"])) if conv.get("source") else None,
                    "opened_at": opened_at,
                    "updated_at": now,
                }
                (out.opened if kind == "opened" else out.updated)[conv["tenant"]] += 1
                event = {
                    "event_id": f"{cid}:{version}",
                    "kind": kind,
                    "tenant": conv["tenant"],
                    "case_id": cid,
                    "source_system": conv["source_system"],
                    "external_interaction_id": conv["external_interaction_id"],
                    "version": version,
                    "content_hash": digest,
                    "channel": conv["channel"],
                    "occurred_at": now,
                }
                value = self.codec.encode(CASE_EVENT, event, trusted=True)
                box.append(self._outbox_row(self.topics.cases, cid, value, now, None))
                profile = select_profile(self.profiles(conv["tenant"]), conv)
                analysis = analyse(profile, conv)
                key = f"{cid}:{version}:{profile.id}:{profile.version}"
                result = {
                    "idempotency_key": key,
                    "tenant": conv["tenant"],
                    "case_id": cid,
                    "case_version": version,
                    "external_interaction_id": conv["external_interaction_id"],
                    "result_version": version,
                    **analysis,
                    "analysed_at": now,
                }
                encoded = self.codec.encode(ANALYSIS_RESULT, result, trusted=True)
                result_rows.append(
                    {
                        "idempotency_key": key,
                        "tenant": conv["tenant"],
                        "case_id": cid,
                        "case_version": version,
                        "result_version": version,
                        "profile_id": profile.id,
                        "profile_version": profile.version,
                        "overall_score": analysis["overall_score"],
                        "passed": analysis["passed"],
                        "result": encoded,
                        "analysed_at": now,
                    }
                )
                announced = conv["source"]["announced_at"] if conv.get("source") else None
                box.append(
                    self._outbox_row(self.topics.analysis_results, cid, encoded, now, announced)
                )
            if case_rows:
                columns = [c for c in next(iter(case_rows.values())) if c != "opened_at"]
                stmt = upsert(self.engine, cases, ["case_id"], columns)  # keeps opened_at
                await conn.execute(stmt, list(case_rows.values()))
            if result_rows:
                await conn.execute(
                    insert_ignore(self.engine, analysis_results, ["idempotency_key"]), result_rows
                )
                out.results = len(result_rows)
            if box:
                await conn.execute(outbox.insert(), box)
        return out

    @staticmethod
    def _outbox_row(
        topic: str, key: str, value: bytes, now: dt.datetime, announced_at: dt.datetime | None
    ) -> dict[str, Any]:
        return {
            "topic": topic,
            "key": key.encode(),
            "value": value,
            "created_at": now,
            "published_at": None,
            "announced_at": announced_at,
        }

    async def record_file_outcome(self, row: dict[str, Any]) -> None:
        """Remember a file's outcome (idempotent per file_id)."""
        stmt = upsert(self.engine, file_outcomes, ["file_id"], list(row))
        async with self.engine.begin() as conn:
            await conn.execute(stmt, [row])

    # -- reads (API, tests) ----------------------------------------------------------------------

    async def count_cases(self, tenant: str | None = None) -> int:
        """Count cases, optionally of one tenant."""
        return await self.count_rows(cases, tenant)

    async def count_current_results(self, tenant: str | None = None) -> int:
        """Count cases whose current version has a result."""
        stmt = (
            select(func.count())
            .select_from(
                cases.join(analysis_results, analysis_results.c.case_id == cases.c.case_id)
            )
            .where(analysis_results.c.case_version == cases.c.version)
        )
        if tenant is not None:
            stmt = stmt.where(cases.c.tenant == tenant)
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())


class OutboxRelay:
    """Publishes outbox rows in id order and marks them published (see the module doc)."""

    def __init__(
        self,
        store: CaseStore,
        producer: Producer,
        *,
        metrics: Metrics,
        batch: int = 2000,
        idle_sleep: float = 0.05,
    ) -> None:
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self.batch = batch
        self.idle_sleep = idle_sleep
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._since_purge = 0

    def wake(self) -> None:
        """Publish soon: new rows were committed."""
        self._wake.set()

    async def start(self) -> None:
        """Start publishing."""
        self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        """Publish what is committed, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            while await self.publish_once():
                pass

    async def _loop(self) -> None:
        while True:
            try:
                sent = await self.publish_once()
            except Exception:  # the relay must outlive a broker or database outage
                log.exception("outbox relay: publishing failed; retrying")
                await asyncio.sleep(1)
                continue
            if not sent:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_sleep * 10)

    async def publish_once(self) -> int:
        """Publish one batch of unpublished rows; return how many."""
        engine = self.store.engine
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        outbox.c.id,
                        outbox.c.topic,
                        outbox.c.key,
                        outbox.c.value,
                        outbox.c.announced_at,
                    )
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self.batch)
                )
            ).all()
        if not rows:
            return 0
        records: list[Record] = [(r.topic, bytes(r.key), bytes(r.value)) for r in rows]
        await self.producer.send_batch(records)
        async with engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_([r.id for r in rows]))
                .values(published_at=utcnow())
            )
        now = utcnow()
        results_topic = self.store.topics.analysis_results
        results = [r for r in rows if r.topic == results_topic]
        self.metrics.results_published.inc(len(results))
        for r in results:
            if r.announced_at is not None:
                announced = r.announced_at
                if announced.tzinfo is None:  # SQLite returns naive UTC
                    announced = announced.replace(tzinfo=dt.UTC)
                self.metrics.end_to_end_latency.observe((now - announced).total_seconds())
        self._since_purge += len(rows)
        if self._since_purge >= 50_000:
            self._since_purge = 0
            cutoff = utcnow() - dt.timedelta(hours=1)
            async with engine.begin() as conn:
                await conn.execute(delete(outbox).where(outbox.c.published_at < cutoff))
        return len(rows)
