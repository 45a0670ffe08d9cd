"""Cases, analysis results, file outcomes and the outbox, in one database transaction per batch.

Exactly-once effects on at-least-once input: :meth:`CaseStore.apply` takes a batch of validated
conversations and, in one transaction,

- skips every delivery applied before (``applied_deliveries``: file version + row, or API
  request + item), so a redelivery never creates a version, even after newer content for its
  case was applied;
- opens a case for each new conversation (case id = hash of tenant, source system and external
  interaction id), or updates it (version + 1) when its content changed, or does nothing when
  it is a re-uploaded duplicate (counted); every new version is kept in ``case_versions``
  with its source (lineage);
- stores the analysis result of every opened or updated case (computed in a worker thread
  before the transaction opens) under its idempotency key
  ``case_id:case_version:profile_id:profile_version``;
- writes the CaseEvent records to the ``outbox`` table, and for each result an outbox row that
  names it (``result_key``): the relay reads the stored record when it publishes, so a result is
  written once;
- queues the recording fetch of every opened or updated case whose conversation waits for its
  recording (``recording.status`` pending, :mod:`streams.fetch.queue`); a pending conversation
  whose recording was already fetched from the same URL takes the stored object instead;
- likewise queues the transcription of every case whose conversation waits for its transcript
  (``transcript.status`` pending, :mod:`streams.voice.queue`); one whose recording was
  transcribed before takes the stored transcript.

:class:`OutboxRelay` publishes outbox rows to Kafka in id order per key and then deletes them
(the outbox holds only what is still to publish; the cases and results stay in their tables). A
crash after the commit publishes them on restart; a crash between publishing and deleting
publishes them again with the same keys (at-least-once events, never a duplicate case or result
version). On PostgreSQL any number of relays (one per worker process) share the outbox: each
publishes a row only inside the transaction that claims and deletes it, and the rows of one key
only while it holds that key's shard (so a case's results stay in order).

On PostgreSQL a batch's writer also publishes the rows it just committed itself
(:meth:`OutboxRelay.publish_written`, with the records it holds in memory): the outbox row is
then only the record of what is still owed, which a relay publishes if the writer could not
(Kafka down, a crash, an older row of the same case still waiting). ``apply`` numbers the rows
from the table's sequence inside its transaction, after locking the batch's cases, so the rows of
one case are numbered in the order their transactions commit.

On PostgreSQL a batch's rows are written with one binary ``COPY`` per table, or an
``INSERT ... SELECT FROM unnest ... ON CONFLICT`` where a conflict is expected or met
(:mod:`streams.cases.bulk`); SQLite takes SQLAlchemy's executemany.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    any_,
    bindparam,
    cast,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from streams.analysis.engine import analyse
from streams.analysis.profiles import Profile, select_profile
from streams.cases import bulk
from streams.codec import AvroCodec
from streams.db import Database, insert_ignore, metadata, upsert
from streams.errors import PublishError
from streams.failures import Failure, classify
from streams.fetch import queue as fetch_queue
from streams.fetch.request import waiting
from streams.kafka import Producer, Record
from streams.metrics import Metrics
from streams.tasks import cancel_and_wait
from streams.topics import Topics
from streams.voice import queue as transcript_queue

log = logging.getLogger(__name__)

CASE_EVENT = "callstream.CaseEvent"
CONVERSATION = "callstream.Conversation"
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
    # Copied from the conversation so GET /v1/results filters without reading cases (null on
    # rows written before they existed).
    Column("agent_id", String(512)),
    Column("team", String(512)),
    Column("campaign", String(512)),
    Index("ix_analysis_results_case", "case_id", "result_version"),
    Index("ix_analysis_results_tenant_time", "tenant", "analysed_at", "idempotency_key"),
    Index("ix_analysis_results_tenant_agent", "tenant", "agent_id"),
    Index("ix_analysis_results_tenant_team", "tenant", "team"),
    Index("ix_analysis_results_tenant_campaign", "tenant", "campaign"),
)

#: Every version a case went through, written in the transaction that applies it: where it was
#: read from (a file version and row, or an API request and item) and what it held (hash).
case_versions = Table(
    "case_versions",
    metadata,
    Column("case_id", String(32), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("file_id", String(64)),  # the file version, or the API request id (req_...)
    Column("row", BigInteger),  # 1-based row of the file, or item of the request
    Column("source", Text),  # the record's SourceRef as JSON
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Index("ix_case_versions_tenant_file", "tenant", "file_id"),
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
    Column("rejected_by_reason", Text),  # JSON object: reason code -> rows
    Column("rows_done", BigInteger),  # last row published: where a retry resumes
    Column("lines_read", BigInteger),
)

#: One row per conversation delivery applied (file version + row): a redelivery is recognised
#: and has no effect, whatever was applied to its case since.
applied_deliveries = Table(
    "applied_deliveries",
    metadata,
    Column("delivery_key", String(200), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("case_id", String(32), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
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
    # Set only by releases before 0012, which marked rows published instead of deleting them:
    # the relay skips such rows and purges them (a rolling upgrade runs both releases at once).
    Column("published_at", DateTime(timezone=True)),
    Column("announced_at", DateTime(timezone=True)),  # source file announced: for latency
    # An AnalysisResult's idempotency key: the record is read from analysis_results when
    # published (value is then empty), so each result is written once (null: value holds it).
    Column("result_key", String(200)),
)


#: Conversation fields copied onto ``analysis_results`` for the results list's filters.
FACETS = ("agent_id", "team", "campaign")
_FACET_CHARS = 512


def _facet(value: str | None) -> str | None:
    """A filter value as stored: at most the column's 512 characters (a longer one is cut, so
    it can never fail the write; filters match its first 512 characters)."""
    return value[:_FACET_CHARS] if value else None


def case_id(tenant: str, source_system: str, external_id: str) -> str:
    """Return the deterministic case id of a conversation."""
    raw = "\x00".join((tenant, source_system, external_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _iso(value: Any) -> str:
    """``json.dumps``' ``default``: a datetime as its ISO 8601 text (the only value of a decoded
    Conversation that JSON has no type for), called only for such values."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# The encoders ``json.dumps`` would build anew on every call with these options (the same
# output; an encoder keeps no state between calls, so threads may share one).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_iso).encode
_SOURCE_JSON = json.JSONEncoder(default=_iso).encode


#: Conversation fields added after cases were first stored: left out of the content hash while
#: unset, so a conversation that does not use them hashes as it did before they existed (a
#: re-upload after an upgrade stays a duplicate, not a new version).
_LATER_FIELDS = frozenset({"duration_ms", "recording"})


def content_json(conversation: dict[str, Any]) -> str:
    """Canonical JSON of what the conversation says (not where or when it was read)."""
    body = {
        k: v
        for k, v in conversation.items()
        if k != "source" and not (k in _LATER_FIELDS and v is None)
    }
    return _CANONICAL_JSON(body)


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
    #: The outbox rows the batch committed in its one transaction, with their records
    #: (PostgreSQL; empty on SQLite, or when a result of the batch was stored before under its
    #: key): for :meth:`OutboxRelay.publish_written`.
    written: list[Written] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        """Add ``other``'s counts to these. The sum has no ``written`` rows: rows of several
        transactions may have another writer's rows of the same case between them (numbered
        in between), which only the relay's id order puts in place."""
        self.opened.update(other.opened)
        self.updated.update(other.updated)
        self.duplicates.update(other.duplicates)
        self.results += other.results
        self.written = []


class Written(NamedTuple):
    """An outbox row a batch committed, and the record it publishes."""

    id: int
    topic: str
    key: bytes
    value: bytes
    announced_at: dt.datetime | None


#: ``SourceRef.file_id`` of a conversation pushed through the ingest API starts with this;
#: ``row`` is then the 1-based item of the request.
API_REQUEST_PREFIX = "req_"
#: ``SourceRef.file_id`` of a conversation consumed from a platform Kafka connector starts with
#: this (then a hash of tenant, connector, topic and partition); ``row`` is the offset + 1.
PLATFORM_PARTITION_PREFIX = "pk_"


def delivery_key(conversation: dict[str, Any]) -> str | None:
    """Identify one delivery of a conversation: its file version and row, its API request and
    item, or its platform topic partition and offset (None: no source)."""
    source = conversation.get("source")
    if not source:
        return None
    file_id = str(source["file_id"])
    kind = (
        "api"
        if file_id.startswith(API_REQUEST_PREFIX)
        else "platform"
        if file_id.startswith(PLATFORM_PARTITION_PREFIX)
        else "file"
    )
    return f"{kind}:{source['file_id']}:{source['row']}"


@dataclass
class _Plan:
    """The rows one batch writes, computed outside the transaction."""

    outcome: BatchOutcome
    new_cases: list[dict[str, Any]] = field(default_factory=list)
    changed_cases: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    box: list[dict[str, Any]] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)  # per box row: the record it publishes
    fetches: list[dict[str, Any]] = field(default_factory=list)
    transcriptions: list[dict[str, Any]] = field(default_factory=list)


class _Conflict(Exception):
    """Another writer changed a case of the batch since it was read."""


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
        self._cpu = ThreadPoolExecutor(1, thread_name_prefix="cases-analysis")

    async def stop(self) -> None:
        """Close the pool and the analysis thread."""
        await super().stop()
        self._cpu.shutdown(wait=False, cancel_futures=True)

    async def apply(self, conversations: Sequence[dict[str, Any]]) -> BatchOutcome:
        """Open, update or absorb each conversation and queue its events (one transaction).

        A delivery applied before (same file version and row) has no second effect, even when
        newer content for the same case was applied in between. The analysis runs in a worker
        thread between a short read and the write transaction; if another writer changed one of
        the batch's cases in between, the batch is planned again.
        """
        if not conversations:
            return BatchOutcome()
        keyed = [
            (case_id(c["tenant"], c["source_system"], c["external_interaction_id"]), c)
            for c in conversations
        ]
        carried = await fetch_queue.carry_stored(self.engine, keyed)
        transcribed = await transcript_queue.carry(self.engine, keyed)
        items = []
        for cid, conv in keyed:
            if cid in carried and waiting(conv):
                conv = {**conv, **carried[cid]}  # fetched before: take the stored object
            if cid in transcribed:
                conv = transcribed[cid]  # transcribed before: take the stored transcript
            body = content_json(conv)
            items.append((cid, content_hash(body), body, conv, delivery_key(conv)))
        ids = sorted({item[0] for item in items})
        keys = sorted({item[4] for item in items if item[4] is not None})
        loop = asyncio.get_running_loop()
        for _attempt in range(5):
            current, seen = await self._read(ids, keys)
            plan = await loop.run_in_executor(self._cpu, self._plan, items, current, seen)
            try:
                exact = await self._write(plan, ids, current)
            except (_Conflict, IntegrityError, bulk.DuplicateRow) as exc:
                log.info("case batch raced another writer (%s); planning it again", exc)
                continue
            if exact and self.engine.dialect.name == "postgresql":
                plan.outcome.written = [
                    Written(row["id"], row["topic"], row["key"], value, row["announced_at"])
                    for row, value in zip(plan.box, plan.values, strict=True)
                ]
            return plan.outcome
        raise RuntimeError("a batch of cases kept racing another writer; giving up for now")

    def _among(self, column: Any, values: list[str]) -> Any:
        """``column IN values``: on PostgreSQL ``= ANY(array)``, one bound parameter however many
        values (no statement compiled per list length)."""
        if self.engine.dialect.name == "postgresql":
            return column == any_(bindparam(None, values, type_=postgresql.ARRAY(String)))
        return column.in_(values)

    async def _read(
        self, ids: list[str], keys: list[str]
    ) -> tuple[dict[str, tuple[int, str]], set[str]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(cases.c.case_id, cases.c.version, cases.c.content_hash).where(
                        self._among(cases.c.case_id, ids)
                    )
                )
            ).all()
            seen: set[str] = set()
            if keys:
                seen = set(
                    (
                        await conn.execute(
                            select(applied_deliveries.c.delivery_key).where(
                                self._among(applied_deliveries.c.delivery_key, keys)
                            )
                        )
                    ).scalars()
                )
        return {r.case_id: (r.version, r.content_hash) for r in rows}, seen

    def _plan(
        self,
        items: list[tuple[str, str, str, dict[str, Any], str | None]],
        current: dict[str, tuple[int, str]],
        seen: set[str],
    ) -> _Plan:
        """Decide every row of the batch and run the analysis (worker thread)."""
        now = utcnow()
        plan = _Plan(BatchOutcome())
        out = plan.outcome
        state = dict(current)
        seen = set(seen)
        rows: dict[str, dict[str, Any]] = {}
        for cid, digest, body, conv, dkey in items:
            tenant = conv["tenant"]
            if dkey is not None:
                if dkey in seen:
                    out.duplicates[tenant] += 1  # a redelivery: applied before, never again
                    continue
                seen.add(dkey)
                plan.deliveries.append(
                    {"delivery_key": dkey, "tenant": tenant, "case_id": cid, "applied_at": now}
                )
            known = state.get(cid)
            if known is not None and known[1] == digest:
                out.duplicates[tenant] += 1
                continue
            version = 1 if known is None else known[0] + 1
            kind = "opened" if known is None else "updated"
            state[cid] = (version, digest)
            rows[cid] = {
                "case_id": cid,
                "tenant": tenant,
                "source_system": conv["source_system"],
                "external_interaction_id": conv["external_interaction_id"],
                "version": version,
                "content_hash": digest,
                "channel": conv["channel"],
                "conversation": body,
                "source": _SOURCE_JSON(conv["source"]) if conv.get("source") else None,
                "opened_at": rows.get(cid, {}).get("opened_at", now),
                "updated_at": now,
            }
            (out.opened if kind == "opened" else out.updated)[tenant] += 1
            source = conv.get("source") or {}
            plan.versions.append(
                {
                    "case_id": cid,
                    "version": version,
                    "tenant": tenant,
                    "content_hash": digest,
                    "file_id": source.get("file_id"),
                    "row": source.get("row"),
                    "source": rows[cid]["source"],
                    "applied_at": now,
                }
            )
            self._queue_events(plan, conv, cid, kind, version, digest, now)
            if waiting(conv):
                encoded = self.codec.encode(CONVERSATION, conv, trusted=True)
                plan.fetches.append(fetch_queue.queued_row(cid, conv, encoded, now))
            if transcript_queue.waiting(conv):
                encoded = self.codec.encode(CONVERSATION, conv, trusted=True)
                plan.transcriptions.append(transcript_queue.queued_row(cid, conv, encoded, now))
        for cid, row in rows.items():
            (plan.changed_cases if cid in current else plan.new_cases).append(row)
        out.results = len(plan.results)
        return plan

    def _queue_events(
        self,
        plan: _Plan,
        conv: dict[str, Any],
        cid: str,
        kind: str,
        version: int,
        digest: str,
        now: dt.datetime,
    ) -> None:
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
        plan.box.append(self._outbox_row(self.topics.cases, cid, value, now))
        plan.values.append(value)
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
        plan.results.append(
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
                **{name: _facet(conv.get(name)) for name in FACETS},
            }
        )
        announced = conv["source"]["announced_at"] if conv.get("source") else None
        plan.box.append(
            self._outbox_row(self.topics.analysis_results, cid, b"", now, announced, key)
        )
        plan.values.append(encoded)

    async def _write(
        self, plan: _Plan, ids: list[str], current: dict[str, tuple[int, str]]
    ) -> bool:
        """Write the plan in one transaction; return whether every row went in as planned
        (False when a result's key was stored before: its outbox row then names that result,
        not the one planned). On PostgreSQL the outbox rows are numbered here (``id``), after
        the batch's cases are locked."""
        exact = True
        async with self.engine.begin() as conn:
            check = select(cases.c.case_id, cases.c.version, cases.c.content_hash).where(
                self._among(cases.c.case_id, ids)
            )
            if self.engine.dialect.name == "postgresql":
                check = check.with_for_update()
            now = {r.case_id: (r.version, r.content_hash) for r in (await conn.execute(check))}
            if now != current:
                raise _Conflict(f"{len(set(now.items()) ^ set(current.items()))} case(s) changed")
            if self.engine.dialect.name == "postgresql":
                if plan.box:
                    numbers = await conn.execute(_NEXT_OUTBOX_IDS, {"n": len(plan.box)})
                    for row, number in zip(plan.box, sorted(numbers.scalars()), strict=True):
                        row["id"] = number
                exact = await self._write_bulk(conn, plan)
            else:
                await self._write_rows(conn, plan)
            if plan.fetches:
                await fetch_queue.enqueue(conn, plan.fetches)
            if plan.transcriptions:
                await transcript_queue.enqueue(conn, plan.transcriptions)
        return exact

    async def _write_rows(self, conn: Any, plan: _Plan) -> None:
        """The plan's rows through SQLAlchemy (SQLite)."""
        if plan.deliveries:
            await conn.execute(applied_deliveries.insert(), plan.deliveries)
        if plan.new_cases:
            await conn.execute(cases.insert(), plan.new_cases)
        if plan.changed_cases:
            columns = [c for c in plan.changed_cases[0] if c != "opened_at"]
            stmt = upsert(self.engine, cases, ["case_id"], columns)  # keeps opened_at
            await conn.execute(stmt, plan.changed_cases)
        if plan.versions:
            await conn.execute(case_versions.insert(), plan.versions)
        if plan.results:
            await conn.execute(
                insert_ignore(self.engine, analysis_results, ["idempotency_key"]), plan.results
            )
        if plan.box:
            await conn.execute(outbox.insert(), plan.box)

    @staticmethod
    async def _write_bulk(conn: Any, plan: _Plan) -> bool:
        """The plan's rows, one bulk statement per table (PostgreSQL, :mod:`streams.cases.bulk`);
        return False when a result's key was stored before (the insert kept that result)."""
        await bulk.insert(conn, applied_deliveries, plan.deliveries)
        await bulk.insert(conn, cases, plan.new_cases)
        if plan.changed_cases:
            columns = list(plan.changed_cases[0])
            keep = [c for c in columns if c != "opened_at"]  # an update keeps opened_at
            await bulk.insert(
                conn,
                cases,
                plan.changed_cases,
                on_conflict=bulk.do_update(["case_id"], keep),
                conflicts_expected=True,  # every changed case exists
            )
        await bulk.insert(conn, case_versions, plan.versions)
        exact = await bulk.insert(
            conn, analysis_results, plan.results, on_conflict=bulk.do_nothing(["idempotency_key"])
        )
        await bulk.insert(conn, outbox, plan.box)
        return exact

    @staticmethod
    def _outbox_row(
        topic: str,
        key: str,
        value: bytes,
        now: dt.datetime,
        announced_at: dt.datetime | None = None,
        result_key: str | None = None,
    ) -> dict[str, Any]:
        return {
            "topic": topic,
            "key": key.encode(),
            "value": value,
            "created_at": now,
            "announced_at": announced_at,
            "result_key": result_key,
        }

    async def file_outcome(self, file_id: str) -> dict[str, Any] | None:
        """Return the recorded outcome (or progress) of a file version, or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(file_outcomes).where(file_outcomes.c.file_id == file_id))
            ).first()
        return dict(row._mapping) if row is not None else None

    async def record_file_outcome(self, row: dict[str, Any]) -> None:
        """Remember a file's outcome or progress (idempotent per file_id)."""
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


#: ``n`` outbox row numbers from the table's own sequence (PostgreSQL).
_NEXT_OUTBOX_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('outbox', 'id')) FROM generate_series(1, :n)"
)

#: What an outbox row publishes: the stored AnalysisResult its ``result_key`` names, else its
#: ``value``.
PUBLISHED_VALUE = func.coalesce(
    select(analysis_results.c.result)
    .where(analysis_results.c.idempotency_key == outbox.c.result_key)
    .scalar_subquery(),
    outbox.c.value,
).label("value")

#: What the relay reads of a row it publishes (the record, and announced_at for the latency).
_PUBLISHED_COLUMNS = (
    outbox.c.id,
    outbox.c.topic,
    outbox.c.key,
    PUBLISHED_VALUE,
    outbox.c.announced_at,
)
#: Rows still to publish: not marked published by a release before 0012 (see the outbox table).
_TO_PUBLISH = outbox.c.published_at.is_(None)

#: Outbox rows are split into this many shards by a hash of their key; on PostgreSQL a relay
#: publishes a shard only while it holds the shard's advisory lock (see OutboxRelay).
SHARDS = 16
#: A relay locks at most this many shards per round, so a second relay always finds free shards
#: while the first publishes (taking every free shard let one busy relay starve the others).
SHARDS_PER_ROUND = SHARDS // 2
_RELAY_LOCK_NS = 0x6F757462  # "outb": advisory lock class of the relay's shard locks
#: Takes every shard's advisory lock, in order (two takers never deadlock), in one statement.
_LOCK_EVERY_SHARD = text("SELECT pg_advisory_xact_lock(:ns, s) FROM generate_series(0, :last) AS s")
#: A relay that finds every shard busy queues for them once the oldest row waited this long.
RELAY_QUEUES_AFTER = dt.timedelta(seconds=2)
#: Takes the given shards' advisory locks in the array's order (ascending: see above).
_LOCK_SHARDS = text("SELECT pg_advisory_xact_lock(:ns, s) FROM unnest(CAST(:shards AS int[])) AS s")
#: The longest a writer waits for the shards before leaving its rows to the relay (seconds).
WRITTEN_LOCK_SECONDS = 5
_WAIT_AT_MOST = text(f"SET LOCAL statement_timeout = '{WRITTEN_LOCK_SECONDS}s'")
_WAIT_AS_CONFIGURED = text("SET LOCAL statement_timeout TO DEFAULT")
#: After Kafka failed a writer's send, writers leave their rows to the relay this long.
WRITTEN_BACKOFF_SECONDS = 30.0


_SHARD_OF_KEY = func.hashtext(func.encode(outbox.c.key, "hex")).op("&")(SHARDS - 1)


class OutboxRelay:
    """Publishes outbox rows in id order per key and deletes them (see the module doc); safe
    with any number of relays on one PostgreSQL database."""

    def __init__(
        self,
        store: CaseStore,
        producer: Producer,
        *,
        metrics: Metrics,
        batch: int = 2000,
        idle_sleep: float = 0.05,
        drain_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self.batch = batch
        self.idle_sleep = idle_sleep
        self.drain_seconds = drain_seconds
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_purge = float("-inf")  # purge on the first publish, then every 10 minutes
        self._next_shard = random.randrange(SHARDS)  # noqa: S311 - spreads relays, no secret
        self._direct_resume_at = float("-inf")  # publish_written: writers publish until then

    def wake(self) -> None:
        """Publish soon: new rows were committed."""
        self._wake.set()

    async def start(self) -> None:
        """Start publishing."""
        self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        """Publish what is committed, for at most ``drain_seconds``, then stop.

        A round still waiting then (Kafka down, say) is cancelled: its transaction rolls back
        and its rows stay unpublished for the next relay; the relay's database connection is
        returned before this returns, so the store can close its pool.
        """
        await cancel_and_wait(self._task)
        try:
            async with asyncio.timeout(self.drain_seconds):
                while await self.publish_once():
                    pass
        except Exception as exc:  # noqa: BLE001 - the rows stay for the next relay
            why = (
                f"not drained within {self.drain_seconds:.0f} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            log.warning(
                "outbox relay: stopped with rows unpublished (%s); the next relay to start "
                "publishes them",
                why,
            )

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

    async def _isolate(self, rows: Sequence[Any], records: list[Record]) -> None:
        """Publish one by one; a record Kafka refuses for good is logged, counted and passed
        over (its case and result stay in the database), so it cannot stall the relay."""
        for row, record in zip(rows, records, strict=True):
            try:
                await self.producer.send_batch([record])
            except PublishError as exc:
                if classify(exc) is not Failure.PERMANENT:
                    raise
                self.metrics.poison_records.labels(stage="outbox").inc()
                log.error(
                    "outbox row %d (%s) refused by Kafka for good: %s", row.id, row.topic, exc
                )

    async def publish_once(self) -> int:
        """Publish one batch of unpublished rows; return how many.

        PostgreSQL: the rows are claimed (deleted), published and committed in one transaction,
        so any number of relays on one database publish each row once (see
        :meth:`_claim_postgres`); a relay that dies mid-batch rolls back and leaves its rows for
        the next one. SQLite (one process): the rows are read, published, then deleted.
        """
        engine = self.store.engine
        if engine.dialect.name == "postgresql":
            async with engine.begin() as conn:
                rows = await self._claim_postgres(conn)
                if rows:
                    await self._send(rows)
        else:
            async with engine.connect() as conn:
                rows = list((await conn.execute(self._unpublished().limit(self.batch))).all())
            if rows:
                await self._send(rows)
                async with engine.begin() as conn:
                    await conn.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
        if not rows:
            return 0
        self._observe(rows)
        if time.monotonic() - self._last_purge >= 600:
            self._last_purge = time.monotonic()
            await self._purge_marked()
        return len(rows)

    async def publish_written(self, written: Sequence[Written]) -> int:
        """Publish rows a writer has just committed in one transaction
        (:attr:`BatchOutcome.written`) with the records it holds, instead of leaving them to a
        relay's next round; return how many. Never raises (but may be cancelled).

        In one transaction: take every shard's advisory lock, in order, waiting in PostgreSQL's
        queue behind other writers and relays (at most :data:`WRITTEN_LOCK_SECONDS` in all),
        give up if an older row of one of these keys is still in the outbox (it was owed first,
        or is being sent by its own writer or a relay: a relay sends them all in id order),
        delete the written rows still there (a relay may have sent some before), send their
        records, and commit once Kafka acknowledged every one.

        Whatever is not sent here is the relay's, which is woken: an older row waits, the lock
        wait ran out, the database failed, or Kafka did (then this relay's writers leave their
        rows to the relay for :data:`WRITTEN_BACKOFF_SECONDS`, rather than each batch holding
        every shard through Kafka's timeout). SQLite, or no rows: the relay is woken.
        """
        engine = self.store.engine
        if not written or engine.dialect.name != "postgresql" or self._direct_paused():
            self.wake()
            return 0
        sent: list[Written] = []
        try:
            async with engine.begin() as conn:
                sent = await self._publish_locked(conn, written)
            if sent:
                self._observe(sent)
        except Exception as exc:  # noqa: BLE001 - the rows stay in the outbox for a relay
            if isinstance(exc, PublishError):
                self._direct_resume_at = time.monotonic() + WRITTEN_BACKOFF_SECONDS
            log.info("outbox: a writer's %d rows are left to the relay (%s)", len(written), exc)
            sent = []
        if len(sent) < len(written):
            self.wake()
        return len(sent)

    def _direct_paused(self) -> bool:
        return time.monotonic() < self._direct_resume_at

    async def _publish_locked(self, conn: Any, written: Sequence[Written]) -> list[Written]:
        """:meth:`publish_written`'s transaction: return the rows sent."""
        await conn.execute(_WAIT_AT_MOST)
        await conn.execute(_LOCK_EVERY_SHARD, {"ns": _RELAY_LOCK_NS, "last": SHARDS - 1})
        await conn.execute(_WAIT_AS_CONFIGURED)
        keys = bindparam(None, list({w.key for w in written}), ARRAY(LargeBinary))
        older = select(outbox.c.id).where(
            outbox.c.id < min(w.id for w in written), outbox.c.key == any_(keys), _TO_PUBLISH
        )
        if (await conn.execute(older.limit(1))).first() is not None:
            return []
        ids = bindparam(None, [w.id for w in written], ARRAY(BigInteger))
        claim = delete(outbox).where(outbox.c.id == any_(ids)).returning(outbox.c.id)
        claimed = set((await conn.execute(claim)).scalars())
        sent = [w for w in written if w.id in claimed]
        if sent:
            await self.producer.send_batch([(w.topic, w.key, w.value) for w in sent])
        return sent

    async def _purge_marked(self) -> None:
        """Delete the rows a release before 0012 marked published (a rolling upgrade); a
        failure is logged and tried again at the next purge, as this round's rows are sent."""
        try:
            async with self.store.engine.begin() as conn:
                await conn.execute(delete(outbox).where(outbox.c.published_at.is_not(None)))
        except Exception:  # the published rows are committed; the purge can wait
            log.warning("outbox relay: purging rows marked published failed", exc_info=True)

    @staticmethod
    def _unpublished() -> Any:
        return select(*_PUBLISHED_COLUMNS).where(_TO_PUBLISH).order_by(outbox.c.id)

    async def _claim_postgres(self, conn: Any) -> list[Any]:
        """Claim and mark up to ``batch`` rows inside the caller's transaction (PostgreSQL).

        Rows are sharded by a hash of their key (:data:`SHARDS`). The relay tries the shards in
        groups of :data:`SHARDS_PER_ROUND`, starting where its previous round stopped (a random
        shard at first): it takes a transaction-scoped advisory lock on each shard of the group
        no other relay holds, then deletes the oldest unpublished rows of those shards, returning
        them (``FOR UPDATE SKIP LOCKED``: a row another transaction holds is never waited for nor
        taken twice); a group with no rows passes to the next, so an empty result means no
        free shard has a row. Locking a group, not every free shard, leaves the other shards to
        a second relay while this one publishes; rotating the start covers every shard within
        ``SHARDS / SHARDS_PER_ROUND`` rounds. The deletes, and the locks, last only if the
        transaction commits, which the caller does once Kafka acknowledged every record. Rows of
        one key are always in one shard, which one relay at a time publishes in id order:
        results stay in order per case.

        Writers that publish their own rows (:meth:`publish_written`) take every shard, waiting
        in PostgreSQL's lock queue. A relay that finds every shard busy while the outbox's oldest
        row has waited :data:`RELAY_QUEUES_AFTER` (left to the relay, so no writer will send it)
        therefore queues too, for the group of that row's shard, in ascending order (it holds no
        lock then, so it cannot deadlock with a writer), rather than trying again and again
        while writers take turns ahead of it. Younger rows are their writers' to send: a relay
        queueing for them took half the rows in the pipeline benchmark, by its slower path.
        """
        anything = False
        for _ in range(SHARDS // SHARDS_PER_ROUND):
            group = [(self._next_shard + i) % SHARDS for i in range(SHARDS_PER_ROUND)]
            self._next_shard = (self._next_shard + SHARDS_PER_ROUND) % SHARDS
            locked = list(
                (
                    await conn.execute(
                        text(
                            "SELECT s FROM unnest(CAST(:shards AS int[])) AS s"
                            " WHERE pg_try_advisory_xact_lock(:ns, s)"
                        ),
                        {"shards": group, "ns": _RELAY_LOCK_NS},
                    )
                ).scalars()
            )
            anything = anything or bool(locked)
            if locked and (rows := await self._take(conn, locked)):
                return rows
        if anything:
            return []
        oldest = select(outbox.c.created_at, _SHARD_OF_KEY.label("shard")).where(_TO_PUBLISH)
        row = (await conn.execute(oldest.order_by(outbox.c.id).limit(1))).first()
        if row is None or row.created_at > utcnow() - RELAY_QUEUES_AFTER:
            return []
        group = sorted((row.shard + i) % SHARDS for i in range(SHARDS_PER_ROUND))
        await conn.execute(_LOCK_SHARDS, {"shards": group, "ns": _RELAY_LOCK_NS})
        return await self._take(conn, group)

    async def _take(self, conn: Any, shards: list[int]) -> list[Any]:
        """Delete up to ``batch`` of the oldest unpublished rows of ``shards``; return them in
        id order (the delete lasts only if the caller's transaction commits)."""
        rows = (await conn.execute(self.claim_statement(shards))).all()
        return sorted(rows, key=lambda r: r.id)

    def claim_statement(self, shards: list[int]) -> Any:
        """The ``DELETE ... RETURNING`` that claims up to ``batch`` of the oldest unpublished
        rows of ``shards`` (``FOR UPDATE SKIP LOCKED``; PostgreSQL).

        The ids are gathered into one array first (an uncorrelated subquery, run once), and the
        rows deleted by primary key. A queue table is often empty when autovacuum visits it, so
        its statistics say "no rows" while a backlog builds; joined to the claimed ids (``IN
        (subquery)`` or ``USING``), the table was then planned as the outer side of a nested
        loop, and one claim with 150,000 rows waiting took 15 s in the fairness benchmark.
        """
        claimed = (
            select(outbox.c.id)
            .where(_TO_PUBLISH, _SHARD_OF_KEY.in_(shards))
            .order_by(outbox.c.id)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
            .subquery("claimed")
        )
        ids = cast(select(func.array_agg(claimed.c.id)).scalar_subquery(), ARRAY(BigInteger))
        return delete(outbox).where(outbox.c.id == any_(ids)).returning(*_PUBLISHED_COLUMNS)

    async def _send(self, rows: Sequence[Any]) -> None:
        records: list[Record] = [(r.topic, bytes(r.key), bytes(r.value)) for r in rows]
        try:
            await self.producer.send_batch(records)
        except PublishError as exc:
            if classify(exc) is not Failure.PERMANENT:
                raise
            await self._isolate(rows, records)

    def _observe(self, rows: Sequence[Any]) -> None:
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
