"""Source schemas and job status by date (seed 002), for the caller's tenant.

- ``GET /v1/{tenant}/sources/{source_type}/schema``: the current schema (404 until created).
- ``PATCH /v1/{tenant}/sources/{source_type}/schema``: create version 1, or change the schema
  compatibly (409 naming each incompatible field); see :mod:`streams.control.sources`.
- ``GET /v1/{tenant}/sources/{source_type}/schema/versions``: every version, oldest first.
- ``GET /v1/{tenant}/sources/{source_type}/job?date=YYYYMMDD``: the latest file version of that
  date (:mod:`streams.ingest.sourcestore`) with its outcome: ``success`` when every row was
  accepted, ``failed`` (with the first rejection's message) when any row or the whole file was
  rejected, ``processing`` while it is being read. 404 when no file of that date was read.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import NotFound
from streams.api.routing import ApiRoutes, Call
from streams.cases.store import file_outcomes
from streams.control import sources
from streams.control.sources import SOURCE_TYPE_PATTERN, SourceSchema, SourceSchemaIn
from streams.ingest.sourcestore import latest_job

routes = ApiRoutes(
    "sources",
    "Source types (CRM data files, seed 002): their schemas and the job status of each day's file.",
)

_SOURCE_TYPE = re.compile(SOURCE_TYPE_PATTERN)
_SCHEMA_PATH = "/v1/{tenant}/sources/{source_type}/schema"


class JobQuery(BaseModel):
    """Which day's file."""

    date: str = Field(
        pattern=r"^[0-9]{8}$", description="The file's date, YYYYMMDD.", examples=["20200125"]
    )

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        try:
            dt.datetime.strptime(value, "%Y%m%d")  # noqa: DTZ007 - a date, no time
        except ValueError:
            raise ValueError(f"{value} is not a calendar date (YYYYMMDD)") from None
        return value


class SourceJobStatus(BaseModel):
    """The latest file version of a source type for one date, and how its reading went."""

    source_type: str
    source_name: str = Field(description="The schema's current display name.")
    file_name: str = Field(examples=["20200125_member.csv"])
    job_id: str = Field(description="The file version's id (file_id in GET /v1/files).")
    process_time: int | None = Field(
        description="When the outcome was decided (epoch seconds); null while processing."
    )
    status: Literal["success", "failed", "processing"]
    error_msg: str | None = Field(
        None,
        description="The first rejection, e.g. 'Invalid data type in column [cust_phone_no]: "
        "expected Integer'; null on success.",
    )
    schema_version: int = Field(description="The schema version the file was read with.")
    rows_accepted: int = 0
    rows_rejected: int = 0
    records_created: int = Field(0, description="Records seen for the first time.")
    records_updated: int = Field(0, description="Records whose content changed.")
    records_unchanged: int = Field(0, description="Records identical to their last version.")
    records_deleted: int = Field(
        0, description="Records of this date that an earlier version held and this one does not."
    )


def _source_type(call: Call) -> str:
    name = call.params["source_type"]
    if not _SOURCE_TYPE.match(name):
        raise NotFound(f"no source type {name[:64]!r}")
    return name


@routes.get(
    _SCHEMA_PATH,
    summary="Get a source type's schema",
    response=SourceSchema,
    errors=(404,),
)
async def get_source_schema(call: Call) -> SourceSchema:
    """The current version of the schema."""
    async with call.ctx.engine.connect() as conn:
        return await sources.get(conn, call.tenant, _source_type(call))


@routes.patch(
    _SCHEMA_PATH,
    summary="Create or change a source type's schema",
    description="The body is the whole schema. The first PATCH creates version 1; later ones "
    "may add fields (and turn pii on) and create the next version; removing or retyping a "
    "field, or changing the primary key, is refused with 409 naming the field.",
    body=SourceSchemaIn,
    response=SourceSchema,
    errors=(404, 409),
)
async def update_source_schema(call: Call) -> SourceSchema:
    """Create or change the schema; audited."""
    return await sources.update(
        call.ctx.engine, call.tenant, _source_type(call), call.body, call.principal.actor
    )


@routes.get(
    _SCHEMA_PATH + "/versions",
    summary="List a source type's schema versions",
    query=PageQuery,
    response=Page[SourceSchema],
    errors=(404,),
)
async def list_source_schema_versions(call: Call) -> Page[SourceSchema]:
    """Every version, oldest first."""
    source_type = _source_type(call)
    after = decode_cursor(call.query.cursor, 1)
    async with call.ctx.engine.connect() as conn:
        await sources.get(conn, call.tenant, source_type)
        items = await sources.versions(
            conn, call.tenant, source_type, int(after[0]) if after else None, call.query.limit + 1
        )
    more = len(items) > call.query.limit
    items = items[: call.query.limit]
    cursor = encode_cursor([items[-1].version]) if more else None
    return Page[SourceSchema](items=items, next_cursor=cursor)


def _status(outcome: Any) -> Literal["success", "failed", "processing"]:
    if outcome is None or outcome.outcome not in ("processed", "partial", "invalid"):
        return "processing"
    return "success" if outcome.outcome == "processed" else "failed"


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:  # SQLite returns naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp())


@routes.get(
    "/v1/{tenant}/sources/{source_type}/job",
    summary="Get the job status of a source type's file for a date",
    query=JobQuery,
    response=SourceJobStatus,
    errors=(404,),
)
async def get_source_job(call: Call) -> SourceJobStatus:
    """The latest version of the date's file: success, failed (with the first error) or
    processing."""
    source_type = _source_type(call)
    date = dt.datetime.strptime(call.query.date, "%Y%m%d").date()  # noqa: DTZ007
    async with call.ctx.engine.connect() as conn:
        schema = await sources.get(conn, call.tenant, source_type)
        job = await latest_job(conn, call.tenant, source_type, date)
        if job is None:
            raise NotFound(f"no {source_type!r} file for {call.query.date}")
        outcome = (
            await conn.execute(select(file_outcomes).where(file_outcomes.c.file_id == job.file_id))
        ).first()
    status = _status(outcome)
    error = None
    if status == "failed":
        error = job.first_error or (outcome.reason if outcome is not None else None)
    return SourceJobStatus(
        source_type=source_type,
        source_name=schema.source_name,
        file_name=job.file_name,
        job_id=job.file_id,
        process_time=_epoch(outcome.decided_at)
        if outcome is not None and status != "processing"
        else None,
        status=status,
        error_msg=error,
        schema_version=job.schema_version,
        rows_accepted=outcome.rows_accepted if outcome is not None else 0,
        rows_rejected=outcome.rows_rejected if outcome is not None else 0,
        records_created=job.records_created,
        records_updated=job.records_updated,
        records_unchanged=job.records_unchanged,
        records_deleted=job.records_deleted,
    )
