"""Results, cases and lineage of the caller's tenant (read-only; every query filters by tenant).

Results are listed newest first by ``(analysed_at, idempotency_key)`` (keyset pages, see
:mod:`streams.control.listing`). A case shows its current conversation, every version it went
through with where that version was read from (``case_versions``), and its results. Lineage
walks the other way round: for each version, the file version (connector state and outcome) or
the API request it came from, the row or item, the content hash, and the results it got.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.cases.store import (
    API_REQUEST_PREFIX,
    analysis_results,
    case_versions,
    cases,
    file_outcomes,
)
from streams.codec import AvroCodec
from streams.control.errors import NotFoundError
from streams.control.ingest import ingest_requests
from streams.control.listing import Key, before, page, utc
from streams.state import connector_files

ANALYSIS_RESULT = "callstream.AnalysisResult"


class Evidence(BaseModel):
    """Why a parameter scored as it did."""

    detail: str
    turn_index: int | None = None
    speaker: str | None = None
    excerpt: str | None = None


class ParameterScore(BaseModel):
    """One parameter of the profile, scored."""

    id: str
    name: str
    rule: str
    weight: float
    score: float
    passed: bool
    applicable: bool = True
    evidence: list[Evidence] = Field(default_factory=list)


class Result(BaseModel):
    """One analysis result (as published on the feedback topic), with the call's agent, team
    and campaign."""

    idempotency_key: str = Field(description="case_id:case_version:profile_id:profile_version")
    case_id: str
    case_version: int
    result_version: int
    external_interaction_id: str
    profile_id: str
    profile_version: int
    overall_score: float = Field(description="Weighted score, 0-100.")
    passed: bool
    parameters: list[ParameterScore]
    agent_id: str | None = None
    team: str | None = None
    campaign: str | None = None
    analysed_at: dt.datetime


class SourceRef(BaseModel):
    """Where a case version was read from: a file version's row or an API request's item."""

    kind: Literal["file", "api"]
    file_id: str = Field(description="The file version, or the API request id (req_...).")
    connector: str
    path: str
    row: int = Field(description="1-based row of the file, or item of the request.")
    announced_at: dt.datetime | None = None


class CaseVersion(BaseModel):
    """One version of a case."""

    version: int
    content_hash: str
    applied_at: dt.datetime | None = None
    source: SourceRef | None = None


class Case(BaseModel):
    """A case: the current conversation, its versions and its results."""

    case_id: str
    source_system: str
    external_interaction_id: str
    channel: str
    version: int = Field(description="The current version.")
    opened_at: dt.datetime
    updated_at: dt.datetime
    conversation: dict[str, Any] = Field(description="The current version's conversation.")
    versions: list[CaseVersion] = Field(description="Oldest first.")
    results: list[Result] = Field(description="Oldest first.")


class FileVersion(BaseModel):
    """A file version as the connector announced it and the processors judged it."""

    file_id: str
    connector: str
    path: str
    version: int | None = Field(None, description="Per-path version (when still the current).")
    size: int | None = None
    announced_at: dt.datetime | None = None
    outcome: str | None = None
    rows_accepted: int | None = None
    rows_rejected: int | None = None
    decided_at: dt.datetime | None = None


class ApiRequest(BaseModel):
    """A push to ``POST /v1/conversations``."""

    request_id: str
    received_at: dt.datetime
    items: int
    accepted: int | None = None
    rejected: int | None = None


class LineageStep(BaseModel):
    """One case version and everything it came from and led to."""

    version: int
    content_hash: str
    applied_at: dt.datetime | None = None
    source: SourceRef | None = None
    file: FileVersion | None = Field(None, description="The file version (file sources).")
    request: ApiRequest | None = Field(None, description="The API request (API sources).")
    results: list[Result]


class Lineage(BaseModel):
    """File version or API request -> row -> conversation -> case versions -> results."""

    case_id: str
    source_system: str
    external_interaction_id: str
    steps: list[LineageStep] = Field(description="One per case version, oldest first.")


def _source(raw: str | None) -> SourceRef | None:
    if not raw:
        return None
    data = json.loads(raw)
    kind: Literal["file", "api"] = (
        "api" if str(data["file_id"]).startswith(API_REQUEST_PREFIX) else "file"
    )
    return SourceRef(kind=kind, **data)


def result_of(row: Any, codec: AvroCodec) -> Result:
    """The API view of an ``analysis_results`` row."""
    body = codec.decode(ANALYSIS_RESULT, bytes(row.result))
    return Result(
        idempotency_key=row.idempotency_key,
        case_id=row.case_id,
        case_version=row.case_version,
        result_version=row.result_version,
        external_interaction_id=body["external_interaction_id"],
        profile_id=row.profile_id,
        profile_version=row.profile_version,
        overall_score=row.overall_score,
        passed=row.passed,
        parameters=body["parameters"],
        agent_id=row.agent_id,
        team=row.team,
        campaign=row.campaign,
        analysed_at=utc(row.analysed_at),
    )


async def list_results(
    engine: AsyncEngine,
    codec: AvroCodec,
    tenant: str,
    limit: int,
    after: Key | None,
    *,
    since: dt.datetime | None = None,
    profile: str | None = None,
    passed: bool | None = None,
    agent: str | None = None,
    team: str | None = None,
    campaign: str | None = None,
    case_id: str | None = None,
) -> tuple[list[Result], list[Any] | None]:
    """One page of ``tenant``'s results, newest first, and the next cursor key."""
    t = analysis_results.c
    stmt = select(analysis_results).where(t.tenant == tenant)
    for column, value in (
        (t.profile_id, profile),
        (t.passed, passed),
        (t.agent_id, agent),
        (t.team, team),
        (t.campaign, campaign),
        (t.case_id, case_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(t.analysed_at >= utc(since))
    cond = before(t.analysed_at, t.idempotency_key, after)
    if cond is not None:
        stmt = stmt.where(cond)
    stmt = stmt.order_by(t.analysed_at.desc(), t.idempotency_key.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items, nxt = page(rows, limit, lambda r: (r.analysed_at, r.idempotency_key))
    return [result_of(r, codec) for r in items], nxt


async def _case_row(conn: AsyncConnection, tenant: str, ident: str) -> Any:
    row = (
        await conn.execute(select(cases).where(cases.c.case_id == ident, cases.c.tenant == tenant))
    ).first()
    if row is None:
        raise NotFoundError(f"no case {ident!r}")
    return row


async def _versions(conn: AsyncConnection, case: Any) -> list[CaseVersion]:
    rows = (
        await conn.execute(
            select(case_versions)
            .where(case_versions.c.case_id == case.case_id, case_versions.c.tenant == case.tenant)
            .order_by(case_versions.c.version)
        )
    ).all()
    out = [
        CaseVersion(
            version=r.version,
            content_hash=r.content_hash,
            applied_at=utc(r.applied_at),
            source=_source(r.source),
        )
        for r in rows
    ]
    if not out or out[-1].version != case.version:  # stored before case_versions existed
        out.append(
            CaseVersion(
                version=case.version, content_hash=case.content_hash, source=_source(case.source)
            )
        )
    return out


async def _results(conn: AsyncConnection, codec: AvroCodec, case: Any) -> list[Result]:
    rows = (
        await conn.execute(
            select(analysis_results)
            .where(
                analysis_results.c.case_id == case.case_id,
                analysis_results.c.tenant == case.tenant,
            )
            .order_by(analysis_results.c.result_version, analysis_results.c.idempotency_key)
        )
    ).all()
    return [result_of(r, codec) for r in rows]


async def get_case(engine: AsyncEngine, codec: AvroCodec, tenant: str, ident: str) -> Case:
    """Return one of ``tenant``'s cases; :class:`NotFoundError` otherwise."""
    async with engine.connect() as conn:
        row = await _case_row(conn, tenant, ident)
        versions = await _versions(conn, row)
        results = await _results(conn, codec, row)
    return Case(
        case_id=row.case_id,
        source_system=row.source_system,
        external_interaction_id=row.external_interaction_id,
        channel=row.channel,
        version=row.version,
        opened_at=utc(row.opened_at),
        updated_at=utc(row.updated_at),
        conversation=json.loads(row.conversation),
        versions=versions,
        results=results,
    )


async def _file(conn: AsyncConnection, tenant: str, file_id: str) -> FileVersion | None:

    fo, cf = file_outcomes.c, connector_files.c
    outcome = (
        await conn.execute(select(file_outcomes).where(fo.file_id == file_id, fo.tenant == tenant))
    ).first()
    known = (
        await conn.execute(
            select(connector_files).where(cf.file_id == file_id, cf.tenant == tenant)
        )
    ).first()
    if outcome is None and known is None:
        return None
    base: Any = outcome if outcome is not None else known
    return FileVersion(
        file_id=file_id,
        connector=base.connector,
        path=base.path,
        version=known.version if known is not None else None,
        size=known.size if known is not None else None,
        announced_at=utc(known.announced_at) if known is not None else None,
        outcome=outcome.outcome if outcome is not None else None,
        rows_accepted=outcome.rows_accepted if outcome is not None else None,
        rows_rejected=outcome.rows_rejected if outcome is not None else None,
        decided_at=utc(outcome.decided_at) if outcome is not None else None,
    )


async def _request(conn: AsyncConnection, tenant: str, request_id: str) -> ApiRequest | None:
    r = ingest_requests.c
    row = (
        await conn.execute(
            select(ingest_requests).where(r.request_id == request_id, r.tenant == tenant)
        )
    ).first()
    if row is None:
        return None
    return ApiRequest(
        request_id=row.request_id,
        received_at=utc(row.received_at),
        items=row.items,
        accepted=row.accepted,
        rejected=row.rejected,
    )


async def lineage(engine: AsyncEngine, codec: AvroCodec, tenant: str, ident: str) -> Lineage:
    """Return the lineage of one of ``tenant``'s cases; :class:`NotFoundError` otherwise."""
    async with engine.connect() as conn:
        row = await _case_row(conn, tenant, ident)
        versions = await _versions(conn, row)
        results = await _results(conn, codec, row)
        steps = []
        for v in versions:
            step = LineageStep(
                version=v.version,
                content_hash=v.content_hash,
                applied_at=v.applied_at,
                source=v.source,
                results=[r for r in results if r.case_version == v.version],
            )
            if v.source is not None and v.source.kind == "file":
                step.file = await _file(conn, tenant, v.source.file_id)
            elif v.source is not None:
                step.request = await _request(conn, tenant, v.source.file_id)
            steps.append(step)
    return Lineage(
        case_id=row.case_id,
        source_system=row.source_system,
        external_interaction_id=row.external_interaction_id,
        steps=steps,
    )
