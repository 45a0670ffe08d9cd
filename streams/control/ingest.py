"""The standard ingest API's operation: validate pushed conversations, publish, answer per item.

Contract of :func:`ingest` (``POST /v1/conversations``):

- each item is checked for shape by :class:`ConversationIn` (unknown fields, wrong JSON types),
  then by the very rules files obey (:func:`streams.ingest.parse.document_conversation`, then
  :func:`streams.ingest.records.conversation_record`: strict Avro and the record limit);
- an accepted item becomes a Conversation of the caller's tenant with ``source`` = the request
  (``file_id`` = request id ``req_...``, ``connector`` = ``api``, ``row`` = 1-based item),
  so its delivery key is ``api:<request>:<item>`` and a redelivery never makes a second version;
- a rejected item becomes a dead letter (stage ``api``, raw = the item's JSON), recorded in the
  database and published, so it can be listed, fixed and replayed;
- the answer comes only after Kafka acknowledged every record of the request;
- the tenant is the caller's: an item naming another tenant is rejected (``tenant_mismatch``);
- ``Idempotency-Key``: the first request with a key runs under a request id kept in
  ``ingest_requests``; a retry with the same key and the same body (canonical JSON) gets the
  stored answer, or - when the first attempt never finished (a crash, a broker outage) - runs
  again under the *same* request id, so every effect is keyed as before and happens once. The
  same key with another body is refused (:class:`~streams.control.errors.ConflictError`, 409).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from sqlalchemy import Column, DateTime, Integer, String, Table, Text, UniqueConstraint, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.cases.store import API_REQUEST_PREFIX, case_id
from streams.codec import AvroCodec
from streams.control import deadletters
from streams.control.errors import ConflictError
from streams.db import metadata
from streams.deadletters import DEAD_LETTER, DeadLetters, dead_letter_id
from streams.ingest.parse import ParseSettings, RowInvalid, document_conversation
from streams.ingest.records import conversation_record
from streams.kafka import Producer, Record
from streams.redact import Redactors
from streams.topics import Topics

MAX_ITEMS = 1000
API_CONNECTOR = "api"
STAGE = "api"

ingest_requests = Table(
    "ingest_requests",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("body_sha256", String(64), nullable=False),
    Column("items", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("accepted", Integer),
    Column("rejected", Integer),
    Column("response", Text),  # the answer as JSON, replayed to a retry with the same key
    UniqueConstraint("tenant", "idempotency_key", name="uq_ingest_requests_key"),
)


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    return value


Stamp = StrictStr | StrictInt | StrictFloat
"""A time as JSON gives it: ISO 8601 text or epoch seconds (never true/false)."""


class TurnIn(BaseModel):
    """One utterance or message of an inline transcript."""

    model_config = ConfigDict(extra="forbid")

    speaker: str = Field(
        description="agent, customer or system (user and visitor mean customer, bot system)."
    )
    at: Stamp | None = Field(None, description="ISO 8601 (UTC when no offset) or epoch seconds.")
    text: str


class ConversationIn(BaseModel):
    """One conversation, shaped like the ``callstream.Conversation`` Avro record.

    ``source`` is not accepted: the service sets it to the request and item. Values are judged
    by the same rules as file rows (reason codes in the answer).
    """

    model_config = ConfigDict(extra="forbid", title="ConversationIn")

    tenant: str | None = Field(
        None, description="Optional; when present it must be the API key's tenant."
    )
    source_system: str | None = Field(
        None,
        description="Platform the conversation comes from; part of the case key. Default: "
        "'default' (as a file connector without ingest.source_system).",
        examples=["genesys"],
    )
    external_interaction_id: str | None = Field(
        None, description="The platform's id of the conversation (required).", examples=["C-1"]
    )
    channel: str | None = Field(None, description="voice (default), chat, email or social.")
    direction: str | None = Field(None, description="inbound, outbound or internal.")
    started_at: Stamp | None = Field(
        None,
        description="ISO 8601 (UTC when no offset) or epoch seconds; required unless turns "
        "carry times.",
        examples=["2026-11-20T09:00:00Z"],
    )
    ended_at: Stamp | None = Field(None, description="Not before started_at.")
    agent_id: str | None = None
    agent_name: str | None = None
    team: str | None = None
    campaign: str | None = None
    ani: str | None = Field(None, description="Customer number (ANI).")
    dnis: str | None = Field(None, description="Dialled number (DNIS).")
    recording_ref: str | None = Field(None, description="URL or store path of the recording.")
    transcript_ref: str | None = None
    turns: list[TurnIn] = Field(default_factory=list, description="Inline transcript, in order.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Flat extra metadata.")
    duration_ms: Annotated[int, Field(ge=0), BeforeValidator(_no_bool)] | None = Field(
        None, description="Length of the call when known."
    )


class ConversationBatchIn(BaseModel):
    """Up to 1,000 conversations in one request."""

    model_config = ConfigDict(extra="forbid")

    items: list[ConversationIn] = Field(min_length=1, max_length=MAX_ITEMS)


class ItemError(BaseModel):
    """Why an item was rejected."""

    reason: str = Field(description="Reason code, as in dead letters (e.g. bad_timestamp).")
    field: str = Field(description="Dotted path of the field, e.g. 'items.3.started_at'.")
    message: str


class ItemResult(BaseModel):
    """What became of one item."""

    index: int = Field(description="0-based position in the request.")
    status: Literal["accepted", "rejected"]
    external_interaction_id: str | None = None
    case_id: str | None = Field(None, description="The case the item opens or updates.")
    dead_letter_id: str | None = Field(None, description="The dead letter a rejection became.")
    errors: list[ItemError] = Field(default_factory=list)


class IngestResult(BaseModel):
    """The answer to a push: counts and one result per item, in order."""

    request_id: str = Field(description="Names the request in lineage (req_...).")
    received_at: dt.datetime
    accepted: int
    rejected: int
    items: list[ItemResult]


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def canonical(data: Any) -> bytes:
    """Canonical JSON of a body: equal for equal content whatever the key order."""
    # ASCII, non-ASCII as escapes: lone surrogates (valid JSON, not UTF-8) encode too.
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def split_body(data: Any) -> tuple[list[Any], str]:
    """Return the body's items and the field-path prefix of item ``i`` (``items.i.`` or '')."""
    if isinstance(data, dict) and "items" in data:
        return list(data["items"]), "items."
    return [data], ""


def _shape_errors(exc: ValidationError, prefix: str) -> list[ItemError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        kind = err["type"]
        reason = {"extra_forbidden": "unknown_field", "missing": "missing_field"}.get(
            kind, "invalid_type"
        )
        path = "".join(c if c.isprintable() else "?" for c in ".".join(map(str, err["loc"])))
        where = f"{prefix}{path}".rstrip(".") or "(item)"
        out.append(ItemError(reason=reason, field=where, message=err["msg"]))
    return out


@dataclass
class Checked:
    """One item after validation: a record to publish or the errors it was rejected for."""

    index: int
    raw: bytes
    external_id: str | None = None
    record: Record | None = None
    case_id: str | None = None
    errors: list[ItemError] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """The request an item came in (its lineage)."""

    request_id: str
    received_at: dt.datetime

    def ref(self, index: int) -> dict[str, Any]:
        """The item's ``SourceRef``."""
        return {
            "file_id": self.request_id,
            "connector": API_CONNECTOR,
            "path": f"api/{self.request_id}",
            "row": index + 1,
            "announced_at": self.received_at,
        }


def check_item(
    item: Any,
    index: int,
    prefix: str,
    tenant: str,
    source: Source,
    codec: AvroCodec,
    topics: Topics,
    max_record_bytes: int,
    redactors: Redactors,
) -> Checked:
    """Validate one item (see the module doc); never raises for its content."""
    raw = canonical(item)
    here = f"{prefix}{index}." if prefix else ""
    checked = Checked(index, raw)
    if isinstance(item, dict) and isinstance(item.get("external_interaction_id"), str):
        checked.external_id = item["external_interaction_id"]
    try:
        conv_in = ConversationIn.model_validate(item)
    except ValidationError as exc:
        checked.errors = _shape_errors(exc, here)
        return checked
    if conv_in.tenant is not None and conv_in.tenant != tenant:
        checked.errors = [
            ItemError(
                reason="tenant_mismatch",
                field=f"{here}tenant",
                message="the tenant is the API key's; leave it out or name your own",
            )
        ]
        return checked
    try:
        settings = ParseSettings(source_system=conv_in.source_system or "default")
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        where = f"{here}source_system"
        checked.errors = [ItemError(reason="invalid_value", field=where, message=msg)]
        return checked
    doc = conv_in.model_dump(exclude={"duration_ms"})  # every string is checked, keys too
    try:
        conv = document_conversation(
            doc, settings, default_channel=settings.default_channel, metadata=conv_in.metadata
        )
        conv.update(
            tenant=tenant,
            source_system=settings.source_system,
            source=source.ref(index),
            duration_ms=conv_in.duration_ms,
        )
        checked.record = conversation_record(codec, topics, conv, max_record_bytes, redactors)
    except RowInvalid as bad:
        err = bad.error
        where = f"{here}{err.column}" if err.column else here.rstrip(".") or "(item)"
        checked.errors = [ItemError(reason=err.reason, field=where, message=err.message)]
        return checked
    checked.external_id = conv["external_interaction_id"]
    checked.case_id = case_id(tenant, settings.source_system, checked.external_id)
    return checked


@dataclass
class IngestParts:
    """What an ingest needs from the running service."""

    engine: AsyncEngine
    codec: AvroCodec
    topics: Topics
    producer: Producer
    dead: DeadLetters
    max_record_bytes: int
    redactors: Redactors


async def _claim(
    engine: AsyncEngine, tenant: str, key: str | None, digest: str, items: int
) -> tuple[Source, IngestResult | None]:
    """Return the request's source and, for a finished retry, its stored answer."""
    now = utcnow()
    for _attempt in range(3):
        if key is not None:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(ingest_requests).where(
                            ingest_requests.c.tenant == tenant,
                            ingest_requests.c.idempotency_key == key,
                        )
                    )
                ).first()
            if row is not None:
                if row.body_sha256 != digest:
                    raise ConflictError(
                        "this Idempotency-Key was used with a different body; use a new key "
                        "for a new request"
                    )
                received = row.received_at
                if received.tzinfo is None:
                    received = received.replace(tzinfo=dt.UTC)
                done = IngestResult.model_validate_json(row.response) if row.response else None
                return Source(row.request_id, received), done
        source = Source(API_REQUEST_PREFIX + secrets.token_hex(12), now)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    ingest_requests.insert().values(
                        request_id=source.request_id,
                        tenant=tenant,
                        idempotency_key=key,
                        body_sha256=digest,
                        items=items,
                        received_at=now,
                    )
                )
        except IntegrityError:
            continue  # a concurrent request with the same key won: read its row
        return source, None
    raise ConflictError("a concurrent request with this Idempotency-Key is in progress")


def _judge(
    parts: IngestParts, tenant: str, source: Source, items: list[Any], prefix: str
) -> tuple[list[Record], list[dict[str, Any]], list[ItemResult]]:
    """Check every item and build its record or dead letter (worker thread: CPU, media)."""
    records: list[Record] = []
    dead: list[dict[str, Any]] = []
    results = []
    for i, item in enumerate(items):
        c = check_item(
            item,
            i,
            prefix,
            tenant,
            source,
            parts.codec,
            parts.topics,
            parts.max_record_bytes,
            parts.redactors,
        )
        if c.record is not None:
            records.append(c.record)
            results.append(
                ItemResult(
                    index=c.index,
                    status="accepted",
                    external_interaction_id=c.external_id,
                    case_id=c.case_id,
                )
            )
            continue
        first = c.errors[0]
        record = parts.dead.build(
            tenant=tenant,
            connector=API_CONNECTOR,
            file_id=source.request_id,
            path=f"api/{source.request_id}",
            reason=first.reason,
            message=first.message,
            stage=STAGE,
            row=c.index + 1,
            column=first.field,
            excerpt=c.raw[:512].decode("utf-8", "replace"),
            raw=c.raw,
        )
        decoded = parts.codec.decode(DEAD_LETTER, record[2])
        decoded["occurred_at"] = source.received_at  # the same row for a retried request
        dead.append(decoded)
        records.append(record)
        results.append(
            ItemResult(
                index=c.index,
                status="rejected",
                external_interaction_id=c.external_id,
                dead_letter_id=dead_letter_id(decoded),
                errors=c.errors,
            )
        )
    return records, dead, results


async def ingest(parts: IngestParts, tenant: str, data: Any, key: str | None) -> IngestResult:
    """Validate, publish and answer one push (see the module doc)."""
    items, prefix = split_body(data)
    digest = hashlib.sha256(canonical(data)).hexdigest()
    source, done = await _claim(parts.engine, tenant, key, digest, len(items))
    if done is not None:
        return done
    records, dead, results = await asyncio.to_thread(_judge, parts, tenant, source, items, prefix)
    await deadletters.record(parts.engine, dead)
    await parts.producer.send_batch(records)
    accepted = sum(1 for r in results if r.status == "accepted")
    parts.dead.metrics.records_accepted.labels(tenant=tenant, connector=API_CONNECTOR).inc(accepted)
    answer = IngestResult(
        request_id=source.request_id,
        received_at=source.received_at,
        accepted=accepted,
        rejected=len(results) - accepted,
        items=results,
    )
    async with parts.engine.begin() as conn:
        await conn.execute(
            sql_update(ingest_requests)
            .where(ingest_requests.c.request_id == source.request_id)
            .values(
                completed_at=utcnow(),
                accepted=answer.accepted,
                rejected=answer.rejected,
                response=answer.model_dump_json(),
            )
        )
    return answer
