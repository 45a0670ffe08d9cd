"""Process one announced file: stream it from its store, parse, validate, publish.

Contract of :meth:`FileProcessor.process` (called by the files agent for each FileArrival):

- rows are read in chunks in the connector's thread (bounded memory), validated (parser rules
  plus strict Avro), and published: valid rows to ``conversations.v1`` (key
  ``<tenant>/<source_system>/<external id>``), bad rows to ``dead-letter.v1`` with reason code,
  row, line, column and an excerpt; the rest of the file goes on;
- once every record of the file is acknowledged by Kafka, the file's outcome (rows accepted /
  rejected) is recorded and a FileOutcome is published, which lets the connector runner clean
  the file up. A file that cannot be read as a whole is dead-lettered once and reported invalid;
- store outages raise :class:`~connectors.errors.ConnectorError` (retriable) so the caller
  retries the whole file; re-publishing is absorbed downstream (same case content).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from connectors.base import FileStore
from connectors.errors import FileVanished, NotARegularFile
from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.ingest.parse import FileRejected, ParsedRow, ParseSettings, detect_format, parse
from streams.kafka import Producer, Record
from streams.metrics import Metrics
from streams.runner import open_store
from streams.settings import ConnectorSettings, Settings
from streams.topics import Topics

log = logging.getLogger(__name__)

CONVERSATION = "callstream.Conversation"
DEAD_LETTER = "callstream.DeadLetter"
FILE_OUTCOME = "callstream.FileOutcome"
CHUNK_ROWS = 2000


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


@dataclass
class FileResult:
    """What processing one file version produced."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    outcome: str = "processed"
    reason: str | None = None
    skipped: str | None = None


class _Session:
    """One connector's store, opened lazily, used from one thread."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self.store: FileStore = open_store(settings.store)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"fetch-{settings.name}")
        self.connected = False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.connected:
            self.store.connect()
            self.connected = True
        try:
            return fn(*args)
        except Exception:
            self.connected = False
            self.store.close()
            raise

    def close(self) -> None:
        self.store.close()
        self.executor.shutdown(wait=True)


class FileProcessor:
    """Turns FileArrival events into Conversation and DeadLetter records (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        topics: Topics,
        producer: Producer,
        metrics: Metrics,
        record_outcome: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.codec = codec
        self.topics = topics
        self.producer = producer
        self.metrics = metrics
        self.record_outcome = record_outcome
        self.media_dir = settings.data_dir / "media"
        self._connectors = {(t.id, c.name): c for t in settings.tenants for c in t.connectors}
        self._sessions: dict[tuple[str, str], _Session] = {}

    def close(self) -> None:
        """Close every store session."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def _session(self, tenant: str, connector: str) -> _Session | None:
        key = (tenant, connector)
        if key not in self._sessions:
            conn = self._connectors.get(key)
            if conn is None:
                return None
            self._sessions[key] = _Session(conn)
        return self._sessions[key]

    async def process(self, arrival: dict[str, Any]) -> FileResult:
        """Process one file version end to end."""
        tenant, connector, path = arrival["tenant"], arrival["connector"], arrival["path"]
        session = self._session(tenant, connector)
        result = FileResult()
        if session is None:
            result.skipped = "unknown_connector"
            log.warning("file %s/%s/%s: no such connector here; skipped", tenant, connector, path)
            return result
        loop = asyncio.get_running_loop()
        try:
            current = await loop.run_in_executor(
                session.executor, session.call, session.store.stat, path
            )
        except NotARegularFile:
            current = None
        if current is None or current.version_id != arrival["version_id"]:
            result.skipped = "superseded" if current is not None else "vanished"
            log.info("file %s/%s/%s: %s before processing", tenant, connector, path, result.skipped)
            return result
        ingest: ParseSettings = session.settings.ingest
        try:
            stream: BinaryIO = await loop.run_in_executor(
                session.executor, session.call, session.store.open, path
            )
        except FileVanished:
            result.skipped = "vanished"
            return result
        try:
            if _is_media(path, ingest):
                digest = await loop.run_in_executor(
                    session.executor,
                    _store_media,
                    stream,
                    self.media_dir / tenant / connector / path,
                )
                log.info(
                    "file %s/%s/%s: stored in the media store, sha256 %s",
                    tenant,
                    connector,
                    path,
                    digest,
                )
                await self._report(arrival, result)
                return result
            rows = parse(stream, path, ingest)
            while True:
                chunk = await loop.run_in_executor(session.executor, _next_chunk, rows)
                if not chunk:
                    break
                await self._publish_chunk(arrival, ingest, chunk, result)
        except FileRejected as exc:
            await self._reject_file(arrival, exc, result)
        finally:
            await loop.run_in_executor(session.executor, stream.close)
        if result.accepted == 0 and result.rejected and result.outcome == "processed":
            result.outcome, result.reason = "invalid", "no_valid_rows"
        await self._report(arrival, result)
        return result

    async def _publish_chunk(
        self,
        arrival: dict[str, Any],
        ingest: ParseSettings,
        chunk: list[ParsedRow],
        result: FileResult,
    ) -> None:
        records: list[Record] = []
        labels = {"tenant": arrival["tenant"], "connector": arrival["connector"]}
        for row in chunk:
            if row.conversation is not None:
                conv = {
                    **row.conversation,
                    "tenant": arrival["tenant"],
                    "source_system": ingest.source_system,
                    "source": {
                        "file_id": arrival["file_id"],
                        "connector": arrival["connector"],
                        "path": arrival["path"],
                        "row": row.row,
                        "announced_at": arrival["announced_at"],
                    },
                }
                try:
                    value = self.codec.encode(CONVERSATION, conv)
                except SchemaError as exc:
                    records.append(
                        self._dead(
                            arrival,
                            row.row,
                            row.line,
                            None,
                            "schema_violation",
                            str(exc),
                            row.excerpt,
                        )
                    )
                    result.rejected["schema_violation"] += 1
                    continue
                key = (
                    f"{arrival['tenant']}/{ingest.source_system}/{conv['external_interaction_id']}"
                )
                records.append((self.topics.conversations, key.encode(), value))
                result.accepted += 1
            else:
                assert row.error is not None  # noqa: S101 - a row is either valid or has an error
                err = row.error
                records.append(
                    self._dead(
                        arrival, row.row, row.line, err.column, err.reason, err.message, row.excerpt
                    )
                )
                result.rejected[err.reason] += 1
        await self.producer.send_batch(records)
        accepted = sum(1 for r in chunk if r.conversation is not None)
        self.metrics.records_accepted.labels(**labels).inc(accepted)

    def _dead(
        self,
        arrival: dict[str, Any],
        row: int | None,
        line: int | None,
        column: str | None,
        reason: str,
        message: str,
        excerpt: str | None,
    ) -> Record:
        record = {
            "tenant": arrival["tenant"],
            "connector": arrival["connector"],
            "file_id": arrival["file_id"],
            "path": arrival["path"],
            "row": row,
            "line": line,
            "column": column,
            "reason": reason,
            "message": message[:2000],
            "excerpt": excerpt[:512] if excerpt else None,
            "occurred_at": utcnow(),
        }
        self.metrics.records_rejected.labels(
            tenant=arrival["tenant"], connector=arrival["connector"], reason=reason
        ).inc()
        key = f"{arrival['tenant']}/{arrival['connector']}/{arrival['path']}"
        return (self.topics.dead_letter, key.encode(), self.codec.encode(DEAD_LETTER, record))

    async def _reject_file(
        self, arrival: dict[str, Any], exc: FileRejected, result: FileResult
    ) -> None:
        result.outcome, result.reason = "invalid", exc.reason
        result.rejected[exc.reason] += 1
        await self.producer.send_batch(
            [self._dead(arrival, None, None, None, exc.reason, str(exc), exc.excerpt)]
        )

    async def _report(self, arrival: dict[str, Any], result: FileResult) -> None:
        now = utcnow()
        rejected = sum(result.rejected.values())
        outcome = {
            "file_id": arrival["file_id"],
            "tenant": arrival["tenant"],
            "connector": arrival["connector"],
            "path": arrival["path"],
            "version_id": arrival["version_id"],
            "outcome": result.outcome,
            "rows_accepted": result.accepted,
            "rows_rejected": rejected,
            "reason": result.reason,
            "decided_at": now,
        }
        await self.record_outcome(outcome)
        key = f"{arrival['tenant']}/{arrival['connector']}/{arrival['path']}"
        await self.producer.send_batch(
            [(self.topics.file_outcomes, key.encode(), self.codec.encode(FILE_OUTCOME, outcome))]
        )
        log.info(
            "file %s/%s/%s: %s, %d rows accepted, %d rejected%s",
            arrival["tenant"],
            arrival["connector"],
            arrival["path"],
            result.outcome,
            result.accepted,
            rejected,
            f" ({dict(result.rejected)})" if rejected else "",
        )


def _is_media(path: str, ingest: ParseSettings) -> bool:
    try:
        return detect_format(path, ingest) == "media"
    except FileRejected:
        return False


def _store_media(stream: BinaryIO, target: Path) -> str:
    """Copy a recording into the media store while hashing it; bounded memory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.part")
    with tmp.open("wb") as out:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
    os.replace(tmp, target)
    return digest.hexdigest()


def _next_chunk(rows: Iterator[ParsedRow]) -> list[ParsedRow]:
    chunk: list[ParsedRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            break
    return chunk
