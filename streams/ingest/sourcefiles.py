"""Read a tenant's source-type files (seed 002) into ``source-records.v1``.

Called by :class:`~streams.ingest.files.FileProcessor` for every file under the connector's
``ingest.sources_folder`` (default ``sources``):

- :meth:`SourceFiles.place` decides, before the file is opened, whether it is a source file of
  a type with a schema (:class:`Placed`), a conversation export (``sources/conversation/...``:
  None, read as today), or misplaced (:class:`~streams.ingest.parse.FileRejected` with reason
  ``misplaced``; the processor dead-letters it and records the outcome ``invalid`` without
  reading it);
- :meth:`SourceFiles.rows` returns the rows of a placed file (the shared CSV/TSV parser with a
  :class:`~streams.ingest.sourcerows.SourceShape`; BOM refused) and :meth:`SourceFiles.encoder`
  the chunk step the processor runs between reading and publishing: rejected rows become dead
  letters, valid rows are decided in :class:`~streams.ingest.sourcestore.SourceStore` (created,
  updated, unchanged, duplicate) and the created or updated ones become SourceRecords keyed
  ``<tenant>/<source_type>/<primary_key>``; unchanged ones are counted, not published;
- :meth:`SourceFiles.finish` publishes the tombstones of a version accepted whole and returns
  the counts by change.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from streams.codec import AvroCodec
from streams.control import sources
from streams.control.sources import CONVERSATION, SourceSchema
from streams.db import Database
from streams.errors import SchemaError
from streams.ingest.parse import (
    EXCERPT,
    FileRejected,
    ParsedRow,
    ParseSettings,
    ParseStats,
    parse_delimited,
)
from streams.ingest.sourcerows import Misplaced, SourceFile, SourceShape, source_file
from streams.ingest.sourcestore import Incoming, SourceJob, SourceStore
from streams.kafka import Producer, Record
from streams.metrics import Metrics
from streams.topics import Topics

SOURCE_RECORD = "callstream.SourceRecord"
_EPOCH = dt.date(1970, 1, 1)
#: Room in a record for the key and Kafka's per-record overhead.
_RECORD_OVERHEAD = 512

#: Builds a dead letter for a row: (row, reason, message, column) -> record (worker thread).
DeadRow = Callable[[ParsedRow, str, str, str | None], Record]
#: Runs a blocking call in the connector's worker thread.
Run = Callable[..., Awaitable[Any]]
Rejection = tuple[ParsedRow, str, str, str | None]
#: Returns a rejected row fit for a dead letter (no PII in clear).
Redact = Callable[[ParsedRow], ParsedRow]


@dataclass(frozen=True, slots=True)
class Placed:
    """A well-placed file of a source type that has a schema."""

    file: SourceFile
    schema: SourceSchema


class SourceFiles:
    """Source-type files: placement, rows, record decisions, tombstones (see the module doc)."""

    def __init__(
        self,
        db: Database,
        codec: AvroCodec,
        topics: Topics,
        producer: Producer,
        metrics: Metrics,
        max_record_bytes: int,
    ) -> None:
        self.db = db
        self.store = SourceStore(db)
        self.codec = codec
        self.topics = topics
        self.producer = producer
        self.metrics = metrics
        self.max_record_bytes = max_record_bytes

    async def place(self, tenant: str, path: str, ingest: ParseSettings) -> Placed | None:
        """Classify a file by name (module doc); raise FileRejected ``misplaced``."""
        if ingest.sources_folder is None:
            return None
        found = source_file(path, ingest.sources_folder)
        if found is None:
            return None
        if isinstance(found, Misplaced):
            raise FileRejected("misplaced", found.message)
        if found.source_type == CONVERSATION:
            return None
        async with self.db.engine.connect() as conn:
            schema = await sources.current(conn, tenant, found.source_type)
        if schema is None:
            raise FileRejected(
                "misplaced",
                f"{found.file_name!r}: source type {found.source_type!r} has no schema (create "
                f"it with PATCH /v1/{tenant}/sources/{found.source_type}/schema)",
            )
        return Placed(found, schema)

    def job(self, arrival: dict[str, Any], placed: Placed) -> SourceJob:
        """The job of a placed file version."""
        return SourceJob(
            file_id=arrival["file_id"],
            tenant=arrival["tenant"],
            source_type=placed.file.source_type,
            date=placed.file.date,
            file_name=placed.file.file_name,
            connector=arrival["connector"],
            path=arrival["path"],
            schema_version=placed.schema.version,
        )

    def rows(
        self, stream: BinaryIO, placed: Placed, ingest: ParseSettings, stats: ParseStats
    ) -> tuple[Iterator[ParsedRow], Redact]:
        """The file's rows as the shared parser reads them against the schema, and how to
        redact a rejected row's raw text (PII cells hashed) for its dead letter."""
        delimiter = "\t" if placed.file.fmt == "tsv" else ","
        shape = SourceShape(placed.schema, ingest.timezone)
        rows = parse_delimited(stream, delimiter, ingest, shape, stats, allow_bom=False)

        def redact(row: ParsedRow) -> ParsedRow:
            if row.raw_spool is not None:
                row.raw_spool.close()
            text = shape.redact(row.raw, delimiter) if row.raw_spool is None else None
            if text == row.raw:
                return row
            if text is None:  # cannot tell the PII cells apart: keep nothing of the row
                return replace(row, raw="", excerpt="", raw_spool=None)
            return replace(row, raw=text, excerpt=_excerpt(text), raw_spool=None)

        return rows, redact

    def encoder(
        self,
        job: SourceJob,
        schema: SourceSchema,
        run: Run,
        dead_row: DeadRow,
        redact: Redact,
        young: bool,
        result: Any,
    ) -> Callable[[list[ParsedRow]], Awaitable[list[Record]]]:
        """The chunk step: returns the records to publish for a chunk of fresh rows.

        ``result`` is the processor's FileResult: ``accepted``, ``rejected``, ``incomplete``
        and ``changes`` are updated here.
        """
        schema_version = schema.version
        key_column = ",".join(f.name for f in schema.key_fields)

        async def encode(chunk: list[ParsedRow]) -> list[Record]:
            bad: list[tuple[ParsedRow, str, str, str | None]] = []
            valid: list[tuple[ParsedRow, dict[str, Any]]] = []
            for row in chunk:
                if row.conversation is None:
                    assert row.error is not None  # noqa: S101 - a row is valid or has an error
                    if row.truncated and young:
                        result.incomplete = True  # the writer may still be at it
                        continue
                    err = row.error
                    bad.append((row, err.reason, err.message, err.column))
                    continue
                value = self._value(job, schema_version, row, row.conversation, "created")
                if len(value) + _RECORD_OVERHEAD > self.max_record_bytes:
                    message = (
                        f"the record encodes to {len(value)} bytes; the record limit "
                        f"(kafka.message_max_bytes) is {self.max_record_bytes}"
                    )
                    bad.append((row, "record_too_large", message, None))
                    continue
                valid.append((row, row.conversation))
            first_error = min(bad, key=lambda b: b[0].row)[2] if bad else None
            incoming = [Incoming(r.row, rec["key"], rec["hash"]) for r, rec in valid]
            changes = await self.store.apply_chunk(job, incoming, first_error)
            records: list[Record] = []
            counted: Counter[str] = Counter()
            for (row, rec), change in zip(valid, changes, strict=True):
                if change == "duplicate":
                    message = (
                        f"Duplicate primary key in row {row.row}: an earlier row of this file "
                        "has the same key"
                    )
                    bad.append((row, "duplicate_key", message, key_column))
                    continue
                counted[change] += 1
                if change in ("created", "updated"):
                    key = f"{job.tenant}/{job.source_type}/{rec['key']}".encode()
                    value = self._value(job, schema_version, row, rec, change)
                    records.append((self.topics.source_records, key, value))
            if bad and first_error is None:
                await self.store.note_error(job.file_id, bad[0][2])
            if bad:
                records.extend(await run(_dead_rows, dead_row, redact, bad))
            for reason in (b[1] for b in bad):
                result.rejected[reason] += 1
            result.accepted += sum(counted.values())
            result.changes.update(counted)
            for change, n in counted.items():
                self.metrics.source_records.labels(
                    tenant=job.tenant, connector=job.connector, change=change
                ).inc(n)
            return records

        return encode

    def _value(
        self,
        job: SourceJob,
        schema_version: int,
        row: ParsedRow | None,
        rec: dict[str, Any] | None,
        change: str,
        key: str | None = None,
    ) -> bytes:
        record = {
            "tenant": job.tenant,
            "source_type": job.source_type,
            "schema_version": schema_version,
            "primary_key": rec["key"] if rec is not None else key,
            "date": (job.date - _EPOCH).days,  # Avro date: days since 1970-01-01
            "change": change,
            "values": rec["values"] if rec is not None else {},
            "content_hash": rec["hash"] if rec is not None else None,
            "file_id": job.file_id,
            "connector": job.connector,
            "path": job.path,
            "row": row.row if row is not None else None,
        }
        try:
            return self.codec.encode(SOURCE_RECORD, record)
        except SchemaError as exc:  # a bug: records are built from checked strings
            raise RuntimeError(f"encoding a source record: {exc}") from exc

    async def finish(self, job: SourceJob, schema_version: int, whole: bool) -> Counter[str]:
        """Publish the tombstones of a version accepted ``whole``; return counts by change."""
        if whole:
            deleted = await self.store.delete_missing(job)
            records: list[Record] = [
                (
                    self.topics.source_records,
                    f"{job.tenant}/{job.source_type}/{key}".encode(),
                    self._value(job, schema_version, None, None, "deleted", key),
                )
                for key in deleted
            ]
            for start in range(0, len(records), 1000):
                await self.producer.send_batch(records[start : start + 1000])
        counts = await self.store.finish(job)
        if whole and counts["deleted"]:
            self.metrics.source_records.labels(
                tenant=job.tenant, connector=job.connector, change="deleted"
            ).inc(counts["deleted"])
        return Counter({k: v for k, v in counts.items() if v})


def _dead_rows(dead_row: DeadRow, redact: Redact, bad: list[Rejection]) -> list[Record]:
    """Build the dead letters of a chunk's rejected rows (worker thread: may write media)."""
    return [dead_row(redact(row), reason, message, column) for row, reason, message, column in bad]


def _excerpt(text: str) -> str:
    return text[:EXCERPT].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
