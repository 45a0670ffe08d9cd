"""Source schemas (seed 002): the fields of each of a tenant's source types, versioned.

A source type (``member``, ``order``, ...) is a tenant's kind of CRM data file. Its schema lists
the fields every file of that type must hold (see :mod:`streams.ingest.sourcerows` for how files
are read). The rules:

- **Creation.** The first ``PATCH`` of a source type that has no schema creates version 1 (the
  seed has Cyntelli create it; here the tenant's key or the operator does, and it is audited
  like any change). ``GET`` of a source type without a schema is 404. The built-in source type
  ``conversation`` (today's conversation exports) has no schema here and cannot be given one.
- **Fields.** Names: a lowercase letter, then lowercase letters, digits and ``_`` (at most 64);
  unique. Types exactly ``String``, ``Integer``, ``Decimal``, ``Date``, ``DateTime``,
  ``Boolean``. ``pii: true`` hashes the field's values (SHA-256) before a record leaves the
  parser. ``primary_key: true`` on one or more fields names a record: at least one is required
  (it keys the topic and tells an update from a new record).
- **Compatibility.** Each accepted ``PATCH`` that changes something stores a new version (the
  old ones are kept, ``GET .../schema/versions``) and an audit entry (who, when, what changed),
  in one transaction. Refused with 409 naming the field: removing a field, changing its type,
  changing which fields form the primary key, adding a primary-key field, and turning ``pii``
  off (values declared sensitive would start leaving in clear). Allowed: adding fields, turning
  ``pii`` on, changing the name, description or field order. A ``PATCH`` identical to the
  current version changes nothing and creates no version (retries are harmless).
- **Who and when.** ``created_at``/``created_by`` are version 1's, ``updated_at``/``updated_by``
  the current version's, as epoch seconds (the seed's shape) and audit actor names
  (``key:<id>``, ``operator``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Column, DateTime, Integer, String, Table, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.text import Line, Paragraph
from streams.db import metadata

#: The source type whose files are conversation exports: read by today's path, no schema here.
CONVERSATION = "conversation"
SOURCE_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
FIELD_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MAX_FIELDS = 500

FieldType = Literal["String", "Integer", "Decimal", "Date", "DateTime", "Boolean"]
SourceType = Annotated[
    str,
    Field(
        pattern=SOURCE_TYPE_PATTERN,
        description="Lowercase letters, digits and '_', starting with a letter.",
        examples=["member"],
    ),
]

source_schemas = Table(
    "source_schemas",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("source_type", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("source_name", String(100), nullable=False),
    Column("description", String(1000), nullable=False),
    Column("fields", Text, nullable=False),  # JSON list of SourceField
    Column("created_at", DateTime(timezone=True), nullable=False),  # version 1's
    Column("created_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # this version's
    Column("updated_by", String(100), nullable=False),
)


class SourceField(BaseModel):
    """One field of a source type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=FIELD_NAME_PATTERN,
        description="Lowercase letters, digits and '_' (no whitespace), starting with a letter; "
        "the file's header names it exactly.",
        examples=["cust_phone_no"],
    )
    type: FieldType = Field(description="How values are checked (see the README's table).")
    pii: bool = Field(False, description="Hash the values with SHA-256 before they leave.")
    primary_key: bool = Field(
        False, description="Part of the record's key (at least one field must be)."
    )


class SourceSchemaIn(BaseModel):
    """The body of ``PATCH .../schema``: the whole schema as it should be."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    source_name: Line = Field(max_length=100, examples=["Member"])
    description: Paragraph = Field("", max_length=1000)
    fields: list[SourceField] = Field(
        alias="schema", min_length=1, max_length=MAX_FIELDS, description="The fields, in order."
    )

    @model_validator(mode="after")
    def _fields_make_a_schema(self) -> Self:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be unique: {', '.join(dupes)} repeated")
        if not any(f.primary_key for f in self.fields):
            raise ValueError("at least one field must be marked primary_key: true")
        return self


class SourceSchema(BaseModel):
    """A source type's schema (one version)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    source_type: str
    source_name: str
    description: str
    version: int = Field(description="1 for the first schema, + 1 for each accepted change.")
    fields: list[SourceField] = Field(alias="schema")
    created_at: int = Field(description="When version 1 was created (epoch seconds).")
    created_by: str = Field(description="Who created version 1 (key:<id> or operator).")
    updated_at: int = Field(description="When this version was created (epoch seconds).")
    updated_by: str = Field(description="Who created this version.")

    @property
    def key_fields(self) -> list[SourceField]:
        """The primary-key fields, in schema order."""
        return [f for f in self.fields if f.primary_key]


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:  # SQLite returns naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp())


def _schema(row: Any) -> SourceSchema:
    m = row._mapping
    return SourceSchema(
        source_type=m["source_type"],
        source_name=m["source_name"],
        description=m["description"],
        version=m["version"],
        fields=[SourceField.model_validate(f) for f in json.loads(m["fields"])],
        created_at=_epoch(m["created_at"]),
        created_by=m["created_by"],
        updated_at=_epoch(m["updated_at"]),
        updated_by=m["updated_by"],
    )


async def current(conn: AsyncConnection, tenant: str, source_type: str) -> SourceSchema | None:
    """Return the current version of a tenant's source type schema, or None."""
    row = (
        await conn.execute(
            select(source_schemas)
            .where(source_schemas.c.tenant == tenant, source_schemas.c.source_type == source_type)
            .order_by(source_schemas.c.version.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _schema(row)


async def get(conn: AsyncConnection, tenant: str, source_type: str) -> SourceSchema:
    """Return the current schema; :class:`NotFoundError` when the tenant has none."""
    schema = await current(conn, tenant, source_type)
    if schema is None:
        raise NotFoundError(f"no schema for source type {source_type!r}")
    return schema


async def versions(
    conn: AsyncConnection, tenant: str, source_type: str, after: int | None, limit: int
) -> list[SourceSchema]:
    """Return up to ``limit`` versions after version ``after``, oldest first."""
    stmt = select(source_schemas).where(
        source_schemas.c.tenant == tenant, source_schemas.c.source_type == source_type
    )
    if after is not None:
        stmt = stmt.where(source_schemas.c.version > after)
    rows = await conn.execute(stmt.order_by(source_schemas.c.version).limit(limit))
    return [_schema(r) for r in rows]


def incompatibilities(old: list[SourceField], new: list[SourceField]) -> list[str]:
    """Return why ``new`` cannot replace ``old`` (empty when it can; see the module doc)."""
    problems: list[str] = []
    by_name = {f.name: f for f in new}
    for field in old:
        now = by_name.get(field.name)
        if now is None:
            problems.append(f"field {field.name!r} is removed: fields cannot be removed")
            continue
        if now.type != field.type:
            problems.append(
                f"field {field.name!r} changes type from {field.type} to {now.type}: "
                "types cannot change"
            )
        if now.primary_key != field.primary_key:
            problems.append(
                f"field {field.name!r} changes primary_key: the record key cannot change"
            )
        if field.pii and not now.pii:
            problems.append(f"field {field.name!r} turns pii off: values declared PII stay hashed")
    known = {f.name for f in old}
    for field in new:
        if field.name not in known and field.primary_key:
            problems.append(
                f"field {field.name!r} is added as primary_key: the record key cannot change"
            )
    return problems


def _changes(old: SourceSchema, new: SourceSchemaIn) -> dict[str, Any]:
    """What a PATCH changes, for the audit trail (empty: nothing)."""
    detail: dict[str, Any] = {}
    if old.source_name != new.source_name:
        detail["source_name"] = new.source_name
    if old.description != new.description:
        detail["description"] = "changed"
    before = {f.name: f for f in old.fields}
    added = [f.name for f in new.fields if f.name not in before]
    if added:
        detail["added"] = added
    pii = [f.name for f in new.fields if f.name in before and f.pii and not before[f.name].pii]
    if pii:
        detail["pii_on"] = pii
    if not added and [f.name for f in new.fields] != [f.name for f in old.fields]:
        detail["reordered"] = True
    return detail


async def update(
    engine: AsyncEngine, tenant: str, source_type: str, data: SourceSchemaIn, actor: str
) -> SourceSchema:
    """Create version 1, or the next version when ``data`` changes the schema compatibly.

    :class:`ConflictError` (409) names every incompatible field, refuses the built-in
    ``conversation`` type and a concurrent change of the same schema.
    """
    if source_type == CONVERSATION:
        raise ConflictError(
            "'conversation' is the built-in source type of conversation exports; its files are "
            "read with the connector's mapping and it has no schema here"
        )
    now = utcnow()
    fields_json = json.dumps([f.model_dump() for f in data.fields])
    try:
        async with engine.begin() as conn:
            old = await current(conn, tenant, source_type)
            if old is None:
                version, created_at, created_by = 1, now, actor
                detail: dict[str, Any] = {
                    "version": 1,
                    "fields": [f.name for f in data.fields],
                    "pii": [f.name for f in data.fields if f.pii],
                    "primary_key": [f.name for f in data.fields if f.primary_key],
                }
                action = "create"
            else:
                problems = incompatibilities(old.fields, data.fields)
                if problems:
                    raise ConflictError(
                        f"incompatible change to the {source_type!r} schema (version "
                        f"{old.version}): " + "; ".join(problems)
                    )
                detail = _changes(old, data)
                if not detail:
                    return old
                version = old.version + 1
                created_at = dt.datetime.fromtimestamp(old.created_at, dt.UTC)
                created_by = old.created_by
                detail["version"] = version
                action = "update"
            await conn.execute(
                source_schemas.insert().values(
                    tenant=tenant,
                    source_type=source_type,
                    version=version,
                    source_name=data.source_name,
                    description=data.description,
                    fields=fields_json,
                    created_at=created_at,
                    created_by=created_by,
                    updated_at=now,
                    updated_by=actor,
                )
            )
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action=action,
                resource="source_schema",
                resource_id=source_type,
                detail=detail,
                at=now,
            )
            return await get(conn, tenant, source_type)
    except IntegrityError as exc:
        raise ConflictError(
            f"the {source_type!r} schema was changed at the same time: read it again and retry"
        ) from exc
