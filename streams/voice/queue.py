"""The durable queue of transcriptions: one row per case, in the case store's database.

Contract: a transcription is queued in the very transaction that opens or updates a case with a
conversation whose ``transcript.status`` is ``pending`` (:func:`enqueue`, called by
:meth:`CaseStore.apply <streams.cases.store.CaseStore.apply>`), so a case waiting for its
transcript always has its row, whatever crashes. Workers claim due rows under a lease
(:mod:`streams.workqueue`), and end a row only after the case's conversation with the
transcript is acknowledged by Kafka. A newer conversation of the case that arrives while the row
is pending (a metadata update) replaces the row's conversation and bumps its ``revision``:
:func:`finish` succeeds only for the revision the worker published, so the worker publishes
again on top of the newest conversation. A pending conversation for a row already ``done`` or
``failed`` for the same recording takes the stored transcript at once (:func:`carry`); one for
another recording queues it again (``generation`` + 1).

Stored turns are the published ones (redacted per the tenant's policy), with offsets from the
start of the recording, so a later metadata version with another start time places them right.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams import workqueue
from streams.db import metadata
from streams.workqueue import utcnow

QUEUED = "pending"
DONE = "done"
FAILED = "failed"
#: ``Transcript.status`` of a conversation.
PENDING = "pending"
TRANSCRIBED = "transcribed"
NOT_TRANSCRIBED = "failed"

transcriptions = Table(
    "transcriptions",
    metadata,
    Column("case_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("revision", Integer, nullable=False),  # + 1 per newer conversation while pending
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("claim", String(32)),
    Column("conversation", LargeBinary, nullable=False),  # the newest pending one, Avro
    Column("recording_key", Text, nullable=False),
    Column("engine", String(32), nullable=False),
    Column("turns", Text),  # JSON [[speaker, offset_ms, text], ...], redacted as published
    Column("redactions", Text),  # JSON {kind: count} of those turns
    Column("reason", String(64)),
    Column("message", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_transcriptions_due", "status", "next_attempt_at"),
    Index("ix_transcriptions_tenant", "tenant", "status"),
)


def waiting(conv: dict[str, Any]) -> bool:
    """Whether ``conv`` waits for its transcript."""
    transcript = conv.get("transcript")
    return transcript is not None and transcript.get("status") == PENDING


@dataclass(frozen=True, slots=True)
class Claimed:
    """One transcription a worker holds."""

    case_id: str
    tenant: str
    generation: int
    attempts: int
    claim: str

    @property
    def held(self) -> workqueue.Held:
        """The (case id, claim) pair the work-queue functions take."""
        return self.case_id, self.claim


def transcript_state(
    status: str, pending: dict[str, Any], reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The ``Transcript`` record of status ``status`` for the pending one ``pending``."""
    return {**pending, "status": status, "reason": reason, "message": message}


def with_turns(
    conv: dict[str, Any], turns: Sequence[Sequence[Any]], redactions: dict[str, int]
) -> dict[str, Any]:
    """``conv`` with the stored ``turns`` (speaker, offset ms, text) placed from its start time,
    their redaction counts added, and its transcript ``transcribed``."""
    start = conv["started_at"]
    counts = dict(conv.get("redactions") or {})
    for kind, n in redactions.items():
        counts[kind] = counts.get(kind, 0) + n
    return {
        **conv,
        "turns": [
            {"speaker": s, "at": start + dt.timedelta(milliseconds=ms), "text": text}
            for s, ms, text in turns
        ],
        "redactions": counts,
        "transcript": transcript_state(TRANSCRIBED, conv["transcript"]),
    }


async def carry(
    engine: AsyncEngine, items: Sequence[tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Return, per case id of ``items`` (case id, conversation) that waits for the transcript
    of a recording already transcribed (or given up on), that conversation completed."""
    wanted = {cid: conv for cid, conv in items if waiting(conv)}
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(transcriptions).where(
                    transcriptions.c.case_id.in_(sorted(wanted)),
                    transcriptions.c.status.in_((DONE, FAILED)),
                )
            )
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        conv = wanted[row.case_id]
        if conv["transcript"]["recording_key"] != row.recording_key:
            continue  # another recording: transcribed again
        if row.status == DONE:
            found[row.case_id] = with_turns(
                conv, json.loads(row.turns or "[]"), json.loads(row.redactions or "{}")
            )
        else:
            state = transcript_state(NOT_TRANSCRIBED, conv["transcript"], row.reason, row.message)
            found[row.case_id] = {**conv, "transcript": state}
    return found


def queued_row(
    case_id: str, conversation: dict[str, Any], encoded: bytes, now: dt.datetime
) -> dict[str, Any]:
    """Return the queue row of a conversation waiting for its transcript (``encoded``: its
    Avro bytes)."""
    transcript = conversation["transcript"]
    return {
        "case_id": case_id,
        "tenant": conversation["tenant"],
        "status": QUEUED,
        "generation": 1,
        "revision": 1,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "claim": None,
        "conversation": encoded,
        "recording_key": transcript["recording_key"],
        "engine": transcript["engine"],
        "turns": None,
        "redactions": None,
        "reason": None,
        "message": None,
        "created_at": now,
        "updated_at": now,
    }


async def enqueue(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Queue (or queue again) the transcriptions of ``rows`` (from :func:`queued_row`) inside
    the caller's transaction (see the module doc)."""
    latest = {row["case_id"]: row for row in rows}  # one case twice in a batch: the last wins
    if not latest:
        return
    c = transcriptions.c
    existing = {
        r.case_id: r
        for r in (
            await conn.execute(
                select(c.case_id, c.status, c.recording_key, c.generation, c.revision).where(
                    c.case_id.in_(sorted(latest))
                )
            )
        ).all()
    }
    fresh = [row for cid, row in latest.items() if cid not in existing]
    if fresh:
        await conn.execute(transcriptions.insert(), fresh)
    for cid, row in latest.items():
        old = existing.get(cid)
        if old is None:
            continue
        stmt = update(transcriptions).where(c.case_id == cid)
        if old.status == QUEUED and old.recording_key == row["recording_key"]:
            # Being transcribed: the newest conversation is the one to complete.
            await conn.execute(
                stmt.values(
                    conversation=row["conversation"],
                    revision=old.revision + 1,
                    updated_at=row["updated_at"],
                )
            )
            continue
        await conn.execute(
            stmt.values(
                {
                    **{k: v for k, v in row.items() if k not in ("case_id", "created_at")},
                    "generation": old.generation + 1,
                    "revision": old.revision + 1,
                }
            )
        )


async def claim(engine: AsyncEngine, limit: int, lease: dt.timedelta) -> list[Claimed]:
    """Claim up to ``limit`` due transcriptions for ``lease``."""
    rows = await workqueue.claim(engine, transcriptions, QUEUED, limit, lease)
    return [Claimed(r.case_id, r.tenant, r.generation, r.attempts, r.claim) for r in rows]


@dataclass(frozen=True, slots=True)
class Latest:
    """The row as it is now: the newest pending conversation and its revision, and whether the
    caller still holds it (same claim and generation)."""

    conversation: bytes
    revision: int
    held: bool


async def latest(engine: AsyncEngine, item: Claimed) -> Latest | None:
    """Read the claimed row again (None: it is gone)."""
    c = transcriptions.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(c.conversation, c.revision, c.claim, c.generation).where(
                    c.case_id == item.case_id
                )
            )
        ).first()
    if row is None:
        return None
    held = row.claim == item.claim and row.generation == item.generation
    return Latest(bytes(row.conversation), row.revision, held)


async def retry_later(
    engine: AsyncEngine, item: Claimed, *, attempts: int, at: dt.datetime, reason: str, message: str
) -> None:
    """Give a claimed transcription back, due again at ``at``."""
    await workqueue.end(
        engine,
        transcriptions,
        item.held,
        item.generation,
        status=QUEUED,
        attempts=attempts,
        next_attempt_at=at,
        reason=reason,
        message=message[:2000],
    )


async def finish(
    engine: AsyncEngine, item: Claimed, revision: int, status: str, **fields: Any
) -> bool:
    """End a claimed transcription as ``done`` or ``failed`` if the conversation published
    was revision ``revision`` (see the module doc); return False when a newer one came."""
    return await workqueue.end(
        engine,
        transcriptions,
        item.held,
        item.generation,
        transcriptions.c.revision == revision,
        status=status,
        **fields,
    )


async def release(engine: AsyncEngine, held: Sequence[Claimed]) -> None:
    """Give back transcriptions a stopping worker holds."""
    await workqueue.release(engine, transcriptions, [i.held for i in held])


async def renew(engine: AsyncEngine, held: Sequence[Claimed], lease: dt.timedelta) -> None:
    """Extend the leases of transcriptions in progress."""
    await workqueue.renew(engine, transcriptions, [i.held for i in held], lease)


async def state_of(engine: AsyncEngine, tenant: str, case_id: str) -> dict[str, Any] | None:
    """Return a case's transcription row (without the conversation), or None (tests, ops)."""
    columns = [c for c in transcriptions.c if c.name != "conversation"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(*columns).where(
                    transcriptions.c.case_id == case_id, transcriptions.c.tenant == tenant
                )
            )
        ).first()
    return dict(row._mapping) if row is not None else None


__all__ = ["Claimed", "transcriptions", "utcnow"]
