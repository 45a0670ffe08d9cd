"""Process one announced file: stream it from its store, parse, validate, publish.

Contract of :meth:`FileProcessor.process` (called by the files agent for each FileArrival):

- a file version whose final outcome is already recorded is not processed again: its outcome is
  published once more (the clean-up may not have seen it) and nothing else happens;
- rows are read in chunks bounded by rows *and* bytes, in the connector's thread (bounded
  memory), validated (parser rules, strict Avro, the record limit) and published: valid rows to
  ``conversations.v1`` (key ``<tenant>/<source_system>/<external id>``), bad rows to
  ``dead-letter.v1`` with reason code, row, line, column and the full raw row; the rest of the
  file goes on. After each chunk is acknowledged its progress is recorded, so a retry after an
  outage resumes after the last acknowledged chunk instead of republishing the file. The next
  chunk is read and encoded while the previous one is being acknowledged (one in flight, file
  order kept). A CSV/TSV file of ``processors.row_worker_min_bytes`` or more is parsed,
  validated and encoded in the row worker process (:mod:`streams.ingest.rowworker`, a core of
  its own) with the same records, dead letters, counts and progress;
- the outcome (processed | partial | invalid | incomplete, rows accepted / rejected by reason,
  lines read) is recorded and published as a FileOutcome, which lets the connector runner clean
  the file up. ``processed`` means every row was accepted. A CSV whose last line is unterminated
  and incomplete is ``incomplete`` (tail not published) while the file is younger than the
  connector's ``incomplete_grace_seconds``; after that the tail is dead-lettered;
- on a connector with ``recordings`` set, recordings and their metadata files are bundles
  (:mod:`streams.ingest.bundles`): a recording is copied to the media store and recorded as its
  call's recording half (outcome ``processed``: it is safe in the media store and waits there
  for its metadata), a metadata file is read (bounded, flat) and recorded as the metadata half;
  whenever the call is then complete, its one Conversation is published (repeats are no-ops in
  the case store). A name that fits no pattern, unreadable metadata, a late update or an
  ambiguous match make the file ``invalid`` with a dead letter;
- store outages and broker or database errors raise (the files agent applies the failure policy
  of :mod:`streams.failures`); when the policy gives up, :meth:`FileProcessor.fail` dead-letters
  the file as ``processing_failed`` and reports it, so no file can stall its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Protocol

from connectors.base import FileStore
from connectors.errors import FileVanished, NotARegularFile
from connectors.netguard import AddressGuard
from streams.codec import AvroCodec
from streams.control.catalog import CONFIG_REVISION, Catalog
from streams.control.secrets import SecretBox
from streams.db import Database
from streams.deadletters import DeadLetters
from streams.failures import GaveUp
from streams.fetch.settings import RecordingFetchSettings
from streams.ingest.bundles import (
    Bundle,
    BundleRejected,
    BundleStore,
    MetadataHalf,
    RecordingHalf,
    Role,
    Step,
    check_key,
    classify,
    conversation,
    metadata_call_time,
)
from streams.ingest.metadata import read_metadata
from streams.ingest.parse import (
    FileRejected,
    ParsedRow,
    ParseSettings,
    ParseStats,
    RowInvalid,
    detect_format,
    parse,
)
from streams.ingest.recordings import RecordingSettings
from streams.ingest.records import conversation_record
from streams.ingest.rowworker import (
    INCOMPLETE,
    DeadRow,
    Item,
    Job,
    RowWorker,
    encode_rows,
    redactor_parts,
)
from streams.ingest.sourcefiles import Placed, SourceFiles
from streams.kafka import Producer, Record
from streams.media import MediaRejected, MediaStore, media_key
from streams.metrics import Metrics
from streams.ownership import connector_key
from streams.redact import Redactors, tenant_redactors
from streams.runner import guard_for, open_store
from streams.settings import ConnectorSettings, Settings
from streams.topics import Topics
from streams.voice import queue as transcript_queue
from streams.voice.stage import VoiceStage

log = logging.getLogger(__name__)

FILE_OUTCOME = "callstream.FileOutcome"
#: Outcomes after which a file version is never processed again.
FINAL = frozenset({"processed", "partial", "invalid"})


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


class OutcomeStore(Protocol):
    """Where file outcomes and progress are kept (the case store's ``file_outcomes``)."""

    async def file_outcome(self, file_id: str) -> dict[str, Any] | None:
        """Return the recorded outcome or progress of a file version, or None."""
        ...

    async def record_file_outcome(self, row: dict[str, Any]) -> None:
        """Upsert the outcome or progress of a file version."""
        ...


@dataclass
class FileResult:
    """What processing one file version produced (so far)."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    outcome: str = "processed"
    reason: str | None = None
    skipped: str | None = None
    rows_done: int = 0
    lines_read: int = 0
    incomplete: bool = False
    changes: Counter[str] = field(default_factory=Counter)
    """Source-type files: records created, updated, unchanged, deleted."""

    def settle(self) -> None:
        """Decide the outcome from the counts (see the module doc)."""
        if self.outcome == "invalid":
            return
        if self.incomplete:
            self.outcome, self.reason = "incomplete", "truncated_row"
        elif self.rejected and self.accepted == 0:
            self.outcome, self.reason = "invalid", "no_valid_rows"
        elif self.rejected:
            self.outcome, self.reason = "partial", self.rejected.most_common(1)[0][0]
        else:
            self.outcome, self.reason = "processed", None


class _Session:
    """One connector's store, opened lazily, used from one thread."""

    def __init__(
        self,
        settings: ConnectorSettings,
        revision: str = CONFIG_REVISION,
        guard: AddressGuard | None = None,
    ) -> None:
        self.settings = settings
        self.revision = revision
        self.store: FileStore = open_store(settings.store, guard)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"fetch-{settings.name}")
        self.connected = False
        self.users = 0
        """Files being processed with this session."""
        self.retired = False
        """The connector changed: close once the last file using it is done."""

    def call(self, fn: Any, *args: Any) -> Any:
        if not self.connected:
            self.store.connect()
            self.connected = True
        try:
            return fn(*args)
        except Exception:
            self.connected = False
            self.store.close()
            raise

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in this connector's thread (no store session needed)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def store_call(self, fn: Any, *args: Any) -> Any:
        """Run a store operation in this connector's thread, connecting first."""
        return await self.run(self.call, fn, *args)

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
        outcomes: OutcomeStore,
        media: MediaStore,
        bundles: BundleStore | None = None,
        catalog: Catalog | None = None,
        sources: SourceFiles | None = None,
        redactors: Redactors | None = None,
    ) -> None:
        self.codec = codec
        self.topics = topics
        self.producer = producer
        self.metrics = metrics
        self.outcomes = outcomes
        self.media = media
        self.max_record_bytes = settings.kafka.message_max_bytes
        self.chunk_rows = settings.processors.chunk_rows
        self.chunk_bytes = settings.processors.chunk_bytes
        self.row_worker_min_bytes = settings.processors.row_worker_min_bytes
        self.row_worker = RowWorker(str(codec.schemas_dir))
        """Parses, validates and encodes large CSV/TSV files in a process of its own."""
        self.catalog = catalog or Catalog(settings)
        self.settings = settings
        self.redactors = redactors or tenant_redactors(settings.tenants, self._derive_keys)
        """Each tenant's redaction of turn text (streams/redact.py), applied to every record."""
        self.dead = DeadLetters(
            codec, topics, metrics, media, self.max_record_bytes, self.redactors
        )
        self._sessions: dict[tuple[str, str], _Session] = {}
        if bundles is None and isinstance(outcomes, Database):
            bundles = BundleStore(outcomes)
        self.bundles = bundles
        """Bundle state (in the case store's database); its ``clock`` is injectable."""
        if sources is None and isinstance(outcomes, Database):
            sources = SourceFiles(outcomes, codec, topics, producer, metrics, self.max_record_bytes)
        self.sources = sources
        """Source-type files (seed 002), read against the tenant's source schemas."""
        self.voice = VoiceStage(settings.voice, media) if settings.voice.enabled else None
        """Voice metrics of recordings (bounded worker threads), set on the call's Conversation."""

    def _derive_keys(self, purpose: str) -> list[bytes]:
        box = self.catalog.box or SecretBox.from_settings(
            self.settings.api.secret_keys, self.settings.data_dir
        )
        return box.derive_keys(purpose)

    def close(self) -> None:
        """Close every store session and stop the row worker."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self.row_worker.stop()
        if self.voice is not None:
            self.voice.close()

    async def _session(self, tenant: str, connector: str) -> _Session | None:
        """Return the connector's session, a new one when the connector changed."""
        entry = await self.catalog.find(tenant, connector)
        key = (tenant, connector)
        session = self._sessions.get(key)
        if session is not None and (entry is None or entry.revision != session.revision):
            del self._sessions[key]
            session.retired = True
            if session.users == 0:
                await asyncio.to_thread(session.close)
            session = None
        if entry is None:
            return None
        if session is None:
            guard = guard_for(self.settings, entry.from_api)
            session = self._sessions[key] = _Session(entry.settings, entry.revision, guard)
        return session

    async def process(self, arrival: dict[str, Any]) -> FileResult:
        """Process one file version end to end (see the module doc)."""
        tenant, connector, path = arrival["tenant"], arrival["connector"], arrival["path"]
        result = FileResult()
        session = await self._session(tenant, connector)
        if session is None:
            result.skipped = "unknown_connector"
            log.warning("file %s/%s/%s: no such connector here; skipped", tenant, connector, path)
            return result
        session.users += 1
        try:
            return await self._process(session, arrival, result)
        finally:
            session.users -= 1
            if session.retired and session.users == 0:
                await asyncio.to_thread(session.close)

    async def _process(
        self, session: _Session, arrival: dict[str, Any], result: FileResult
    ) -> FileResult:
        tenant, connector, path = arrival["tenant"], arrival["connector"], arrival["path"]
        prior = await self.outcomes.file_outcome(arrival["file_id"])
        if prior is not None and prior["outcome"] in FINAL:
            result.skipped = "already_decided"
            await self._publish_outcome(_outcome_event(prior))
            log.info("file %s/%s/%s: outcome already recorded", tenant, connector, path)
            return result
        if prior is not None:
            _resume(result, prior)
        ingest: ParseSettings = session.settings.ingest
        placed: Placed | None = None
        if self.sources is not None:
            try:
                placed = await self.sources.place(tenant, path, ingest)
            except FileRejected as exc:  # misplaced: recorded, never read
                await self._reject_file(arrival, exc, result)
                result.settle()
                await self._report(arrival, result)
                return result
        try:
            current = await session.store_call(session.store.stat, path)
        except NotARegularFile:
            current = None
        if current is None or current.version_id != arrival["version_id"]:
            result.skipped = "superseded" if current is not None else "vanished"
            log.info("file %s/%s/%s: %s before processing", tenant, connector, path, result.skipped)
            return result
        try:
            stream: BinaryIO = await session.store_call(session.store.open, path)
        except (FileVanished, NotARegularFile):
            result.skipped = "vanished"
            return result
        rec = session.settings.recordings
        role = classify(path, rec) if rec is not None and placed is None else None
        try:
            if placed is not None:
                await self._source_rows(session, arrival, stream, placed, result)
            elif rec is not None and role is not None:
                await self._bundle(session, arrival, stream, rec, role, result)
            elif _is_media(path, ingest):
                stored = await session.run(
                    functools.partial(
                        self.media.put_media,
                        tenant,
                        arrival["file_id"],
                        path,
                        stream,
                        when=arrival["announced_at"],
                    )
                )
                log.info(
                    "file %s/%s/%s: stored as media %s, %d bytes, sha256 %s, %s s",
                    tenant,
                    connector,
                    path,
                    stored.uri,
                    stored.size,
                    stored.sha256,
                    stored.duration_seconds,
                )
            else:
                await self._rows(session, arrival, stream, result)
        except (FileRejected, MediaRejected) as exc:
            await self._reject_file(arrival, exc, result)
        except FileVanished:
            result.skipped = "vanished"  # replaced while read: the new version is announced
            log.info("file %s/%s/%s: changed while it was read", tenant, connector, path)
            return result
        finally:
            await session.run(stream.close)
        result.settle()
        await self._report(arrival, result)
        return result

    async def _bundle(
        self,
        session: _Session,
        arrival: dict[str, Any],
        stream: BinaryIO,
        rec: RecordingSettings,
        role: Role,
        result: FileResult,
    ) -> None:
        """Record a recording or metadata file as its call's half; publish the call when it is
        complete (see :mod:`streams.ingest.bundles`)."""
        if self.bundles is None:
            raise RuntimeError("recordings are configured but no bundle store was given")
        if role.kind == "recording":
            step = await self._recording(session, arrival, stream, rec, role, self.bundles)
        else:
            step = await self._metadata(session, arrival, stream, rec, role, self.bundles)
        if step.rejected is not None:
            raise BundleRejected(*step.rejected)
        if step.report is not None:  # the file is fine and waits; the call needs a look
            reason, message = step.report
            await self.producer.send_batch([self._dead_file(arrival, reason, message, "bundle")])
        if step.bundle is not None and step.bundle.complete:
            await self._publish_call(arrival, step.bundle, rec, result)

    async def _recording(
        self,
        session: _Session,
        arrival: dict[str, Any],
        stream: BinaryIO,
        rec: RecordingSettings,
        role: Role,
        bundles: BundleStore,
    ) -> Step:
        tenant, path = arrival["tenant"], arrival["path"]
        name = role.name
        problem = "it does not fit the pattern" if name is None else check_key(role.key)
        if name is None or role.key is None or problem is not None:
            pattern = rec.id_pattern if rec.mode == "by_id" else rec.name_pattern
            raise FileRejected(
                "bad_recording_name",
                f"recording name {PurePosixPath(path).name!r}: {problem} ({pattern!r})",
            )
        source_system = session.settings.ingest.source_system
        known = await bundles.recording_of(tenant, source_system, role.key, arrival["file_id"])
        if known is not None and known.rec_ref is not None:  # a redelivery: copied already
            ref, sha, size, duration = (
                known.rec_ref,
                known.rec_sha256 or "",
                known.rec_size or 0,
                known.rec_duration,
            )
        else:
            put = functools.partial(
                self.media.put_media,
                tenant,
                arrival["file_id"],
                PurePosixPath(path).name,
                stream,
                when=name.call_time or arrival["announced_at"],
            )
            try:
                stored = await session.run(put)
            except MediaRejected as exc:
                raise FileRejected(exc.reason, str(exc)) from exc
            ref, sha, size, duration = (
                stored.ref,
                stored.sha256,
                stored.size,
                stored.duration_seconds,
            )
            log.info("file %s/%s/%s: stored as media %s", tenant, arrival["connector"], path, ref)
        half = RecordingHalf(
            arrival["file_id"],
            arrival["connector"],
            path,
            ref,
            sha,
            size,
            duration,
            name.fields,
            name.call_time,
            arrival["announced_at"],
        )
        return await bundles.add_recording(tenant, source_system, role.key, rec.mode, half, rec)

    async def _metadata(
        self,
        session: _Session,
        arrival: dict[str, Any],
        stream: BinaryIO,
        rec: RecordingSettings,
        role: Role,
        bundles: BundleStore,
    ) -> Step:
        tenant, path = arrival["tenant"], arrival["path"]
        fields = await session.run(read_metadata, stream, PurePosixPath(path).name, rec.metadata)
        when = role.name.call_time if role.name is not None else None
        half = MetadataHalf(
            arrival["file_id"],
            arrival["connector"],
            path,
            fields,
            when or metadata_call_time(fields, rec),
            arrival["announced_at"],
        )
        source_system = session.settings.ingest.source_system
        if rec.mode == "matched":
            return await bundles.add_matched_metadata(tenant, source_system, half, rec)
        problem = check_key(role.key)
        if role.key is None or problem is not None:
            raise FileRejected(
                "bad_metadata_name", f"metadata name {PurePosixPath(path).name!r}: {problem}"
            )
        return await bundles.add_metadata(tenant, source_system, role.key, rec.mode, half, rec)

    async def _publish_call(
        self, arrival: dict[str, Any], bundle: Bundle, rec: RecordingSettings, result: FileResult
    ) -> None:
        """Publish the complete call's Conversation, sourced from this file (row 1)."""
        source = {
            "file_id": arrival["file_id"],
            "connector": arrival["connector"],
            "path": arrival["path"],
            "row": 1,
            "announced_at": arrival["announced_at"],
        }
        conv = conversation(bundle, rec, source)
        conv["voice"], conv["transcript"] = await self._voice(bundle, rec)
        try:
            record = conversation_record(
                self.codec, self.topics, conv, self.max_record_bytes, self.redactors
            )
        except RowInvalid as exc:
            raise FileRejected(exc.error.reason, exc.error.message) from exc
        await self.producer.send_batch([record])
        result.accepted += 1
        self.metrics.records_accepted.labels(
            tenant=bundle.tenant, connector=arrival["connector"]
        ).inc()
        log.info(
            "call %s/%s/%s: published (recording %s, metadata version %d)",
            bundle.tenant,
            bundle.source_system,
            bundle.call_key,
            "yes" if bundle.has_recording else "not yet",
            bundle.meta_versions,
        )

    async def _voice(
        self, bundle: Bundle, rec: RecordingSettings
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The call's voice metrics and, when a transcriber is configured and the metrics heard
        some speech, its pending transcript (done later by :mod:`streams.voice.worker`).
        Computed from the stored recording each time the call is published (the same recording gives
        the same metrics, so repeats stay no-ops)."""
        if self.voice is None or bundle.rec_file_id is None or bundle.rec_path is None:
            return None, None
        when = bundle.rec_call_time or bundle.rec_announced_at
        if when is None:
            return None, None
        name = PurePosixPath(bundle.rec_path).name
        key = media_key(bundle.tenant, bundle.rec_file_id, name, when)
        metrics = await self.voice.analyse(key, name, rec.agent_channel)
        engine = self.settings.voice.transcription.engine
        if metrics["status"] != "analysed" or engine == "none" or not metrics["talk_seconds"]:
            return metrics, None  # nothing to transcribe (no speech heard: no transcript)
        pending = {
            "status": transcript_queue.PENDING,
            "engine": engine,
            "recording_key": key,
            "agent_channel": rec.agent_channel,
            "reason": None,
            "message": None,
        }
        return metrics, pending

    async def _rows(
        self, session: _Session, arrival: dict[str, Any], stream: BinaryIO, result: FileResult
    ) -> None:
        ingest = session.settings.ingest
        young = _young(session, arrival)
        if (
            0 < self.row_worker_min_bytes <= (arrival.get("size") or 0)
            and not self.row_worker.busy
            and detect_format(arrival["path"], ingest) in ("csv", "tsv")
        ):
            self.row_worker.busy = True
            try:
                if await self._rows_in_worker(session, arrival, stream, young, result):
                    return
            finally:
                self.row_worker.busy = False
        stats = ParseStats()
        rows = parse(stream, arrival["path"], ingest, stats)

        async def encode(fresh: list[ParsedRow]) -> list[Record]:
            records: list[Record] = await session.run(
                self._encode,
                arrival,
                ingest,
                fresh,
                young,
                result,
                stats.header_raw,
                session.settings.recording_fetch,
            )
            return records

        await self._chunks(session, arrival, rows, stats, encode, result, pipelined=True)

    async def _rows_in_worker(
        self,
        session: _Session,
        arrival: dict[str, Any],
        stream: BinaryIO,
        young: bool,
        result: FileResult,
    ) -> bool:
        """:meth:`_rows` in the row worker process (:mod:`streams.ingest.rowworker`): this
        process streams the file to it and publishes the chunks it returns, pipelined as
        :meth:`_chunks` does (one chunk in flight, progress after each acknowledgement).
        Returns False, having read nothing, when the worker process cannot be started."""
        worker = self.row_worker
        ingest = session.settings.ingest
        redaction, key = redactor_parts(self.redactors.for_tenant(arrival["tenant"]))
        job = Job(
            arrival=arrival,
            ingest=ingest,
            young=young,
            fetch=session.settings.recording_fetch,
            topics=self.topics,
            max_record_bytes=self.max_record_bytes,
            redaction=redaction,
            redaction_key=key,
            rows_done=result.rows_done,
            chunk_rows=self.chunk_rows,
            chunk_bytes=self.chunk_bytes,
        )
        try:
            await asyncio.to_thread(worker.begin, job)
        except OSError as exc:
            log.warning("the row worker process cannot start (%s): reading in-process", exc)
            await asyncio.to_thread(worker.stop)
            return False
        feeding = asyncio.ensure_future(session.run(worker.feed, stream))
        in_flight: asyncio.Task[None] | None = None
        idle = False
        try:
            while True:
                message = await asyncio.to_thread(worker.receive)
                kind = message[0]
                if kind == "chunk":
                    _kind, items, last, result.lines_read, header = message
                    if last is None:
                        continue  # published before an outage: resume after it
                    records = await asyncio.to_thread(self._settle, arrival, items, result, header)
                    done = last if not result.incomplete else last - 1
                    progress = _outcome_row(arrival, result, "processing", utcnow())
                    progress["rows_done"] = done
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(self._publish_chunk(records, progress))
                    result.rows_done = done
                elif kind == "end":
                    result.lines_read = message[1]
                    break
                else:
                    idle = True  # the worker read to its end or abort mark: ready for the next
                    if kind == "aborted":
                        await feeding  # raises what reading the file raised
                    with contextlib.suppress(Exception):
                        await feeding  # the file's own problem comes first
                    if kind == "rejected":
                        raise FileRejected(message[1], message[2], message[3])
                    if kind == "os_error":  # its disk or I/O: transient, as in this process
                        raise OSError(f"the row worker failed: {message[-1]}")
                    raise RuntimeError(f"the row worker failed: {message[-1]}")
            if in_flight is not None:
                await in_flight
            await feeding
            idle = True
            return True
        finally:
            if not idle:  # the worker may be mid-file: a new process takes the next one
                await asyncio.to_thread(worker.stop)
            for task in (in_flight, feeding):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _source_rows(
        self,
        session: _Session,
        arrival: dict[str, Any],
        stream: BinaryIO,
        placed: Placed,
        result: FileResult,
    ) -> None:
        """Read a source-type file into SourceRecords (:mod:`streams.ingest.sourcefiles`)."""
        assert self.sources is not None  # noqa: S101 - only placed when there are sources
        sources = self.sources
        job = sources.job(arrival, placed)
        await sources.store.begin(job)
        stats = ParseStats()
        rows, redact = sources.rows(stream, placed, session.settings.ingest, stats)

        def dead_row(row: ParsedRow, reason: str, message: str, column: str | None) -> Record:
            return self._dead_row(arrival, row, reason, message, column, stats.header_raw)

        version = placed.schema.version
        encode = sources.encoder(
            job, placed.schema, session.run, dead_row, redact, _young(session, arrival), result
        )
        try:
            await self._chunks(session, arrival, rows, stats, encode, result)
        except FileRejected as exc:
            await sources.store.note_error(job.file_id, str(exc))
            raise
        whole = not result.rejected and not result.incomplete
        result.changes = await sources.finish(job, version, whole)

    async def _chunks(
        self,
        session: _Session,
        arrival: dict[str, Any],
        rows: Iterator[ParsedRow],
        stats: ParseStats,
        encode: Callable[[list[ParsedRow]], Awaitable[list[Record]]],
        result: FileResult,
        *,
        pipelined: bool = False,
    ) -> None:
        """Read, encode and publish ``rows`` chunk by chunk, recording progress after each.

        ``pipelined`` (conversation rows, whose encoding has no side effects outside
        ``result``): while one chunk is being sent and acknowledged, the next is read and
        encoded. At most one chunk is in flight, so chunks reach Kafka in file order, and the
        progress recorded after a chunk's acknowledgement counts exactly the chunks acknowledged
        so far (a snapshot taken when the chunk was encoded).
        """
        in_flight: asyncio.Task[None] | None = None
        try:
            while True:
                chunk = await session.run(self._next_chunk, rows)
                result.lines_read = stats.lines_read
                if not chunk:
                    break
                fresh = [r for r in chunk if r.row > result.rows_done]
                if not fresh:
                    continue  # published before an outage: resume after it
                records = await encode(fresh)
                done = fresh[-1].row if not result.incomplete else fresh[-1].row - 1
                progress = _outcome_row(arrival, result, "processing", utcnow())
                progress["rows_done"] = done
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(self._publish_chunk(records, progress))
                if not pipelined:
                    await in_flight
                result.rows_done = done
            if in_flight is not None:
                await in_flight
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await in_flight

    async def _publish_chunk(self, records: list[Record], progress: dict[str, Any]) -> None:
        """Send one chunk's records, then record the file's progress up to it."""
        await self.producer.send_batch(records)
        progress["decided_at"] = utcnow()
        await self.outcomes.record_file_outcome(progress)

    def _next_chunk(self, rows: Iterator[ParsedRow]) -> list[ParsedRow]:
        """Read rows until ``chunk_rows`` rows or ``chunk_bytes`` of raw text."""
        chunk: list[ParsedRow] = []
        size = 0
        for row in rows:
            chunk.append(row)
            size += len(row.raw)
            if len(chunk) >= self.chunk_rows or size >= self.chunk_bytes:
                break
        return chunk

    def _encode(
        self,
        arrival: dict[str, Any],
        ingest: ParseSettings,
        chunk: list[ParsedRow],
        young: bool,
        result: FileResult,
        header: str | None = None,
        fetch: RecordingFetchSettings | None = None,
    ) -> list[Record]:
        """Encode a chunk into conversation and dead-letter records (worker thread); with
        ``fetch``, a row naming its recording by URL or call id is marked for the fetch
        (:func:`streams.fetch.request.request_fetch`)."""
        items = encode_rows(
            chunk,
            arrival,
            ingest,
            young,
            fetch,
            self.codec,
            self.topics,
            self.max_record_bytes,
            self.redactors,
        )
        return self._settle(arrival, items, result, header)

    def _settle(
        self, arrival: dict[str, Any], items: list[Item], result: FileResult, header: str | None
    ) -> list[Record]:
        """The records of a chunk's items (dead rows become dead letters), counted in
        ``result`` and the accepted-records metric."""
        records: list[Record] = []
        accepted = 0
        for item in items:
            if isinstance(item, tuple):
                records.append(item)
                accepted += 1
            elif isinstance(item, DeadRow):
                row = item.row
                if item.spool_path is not None:  # spooled by the row worker: ours to delete
                    row = dataclasses.replace(row, raw_spool=open(item.spool_path, "rb"))  # noqa: SIM115 - closed by the dead letter
                    os.unlink(item.spool_path)
                records.append(
                    self._dead_row(arrival, row, item.reason, item.message, item.column, header)
                )
                result.rejected[item.reason] += 1
            else:
                assert item == INCOMPLETE  # noqa: S101 - the only other item
                result.incomplete = True
        result.accepted += accepted
        self.metrics.records_accepted.labels(
            tenant=arrival["tenant"], connector=arrival["connector"]
        ).inc(accepted)
        return records

    def _dead_row(
        self,
        arrival: dict[str, Any],
        row: ParsedRow,
        reason: str,
        message: str,
        column: str | None,
        header: str | None,
    ) -> Record:
        return self.dead.build(
            tenant=arrival["tenant"],
            connector=arrival["connector"],
            file_id=arrival["file_id"],
            path=arrival["path"],
            reason=reason,
            message=message,
            stage="parse" if row.error is not None else "validate",
            row=row.row,
            line=row.line,
            column=column,
            excerpt=row.excerpt,
            raw=row.raw.encode("utf-8", "surrogateescape") if row.raw_spool is None else None,
            raw_spool=row.raw_spool,
            header=header or None,
        )

    async def _reject_file(
        self, arrival: dict[str, Any], exc: FileRejected | MediaRejected, result: FileResult
    ) -> None:
        result.outcome, result.reason = "invalid", exc.reason
        result.rejected[exc.reason] += 1
        if isinstance(exc, MediaRejected):
            stage, excerpt = "media", None
        else:
            stage = "bundle" if isinstance(exc, BundleRejected) else "parse"
            excerpt = exc.excerpt
        record = self._dead_file(arrival, exc.reason, str(exc), stage, excerpt)
        await self.producer.send_batch([record])

    def _dead_file(
        self,
        arrival: dict[str, Any],
        reason: str,
        message: str,
        stage: str,
        excerpt: str | None = None,
    ) -> Record:
        return self.dead.build(
            tenant=arrival["tenant"],
            connector=arrival["connector"],
            file_id=arrival["file_id"],
            path=arrival["path"],
            reason=reason,
            message=message,
            stage=stage,
            excerpt=excerpt,
        )

    async def fail(self, arrival: dict[str, Any], error: GaveUp) -> FileResult:
        """Dead-letter a file the failure policy gave up on and report it (never raises for
        the file's content; transient errors still raise to be retried)."""
        result = FileResult()
        prior = await self.outcomes.file_outcome(arrival["file_id"])
        if prior is not None:
            _resume(result, prior)
        reason = "unreadable_file" if error.kind == "permanent" else "processing_failed"
        record = self.dead.build(
            tenant=arrival["tenant"],
            connector=arrival["connector"],
            file_id=arrival["file_id"],
            path=arrival["path"],
            reason=reason,
            message=str(error),
            stage="files",
        )
        await self.producer.send_batch([record])
        result.rejected[reason] += 1
        result.outcome = "partial" if result.accepted else "invalid"
        result.reason = reason
        await self._report(arrival, result)
        return result

    async def _report(self, arrival: dict[str, Any], result: FileResult) -> None:
        row = _outcome_row(arrival, result, result.outcome, utcnow())
        await self.outcomes.record_file_outcome(row)
        event = _outcome_event(row)
        if result.changes:
            event["records_by_change"] = dict(result.changes)
        await self._publish_outcome(event)
        rejected = sum(result.rejected.values())
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
        if result.changes:
            log.info(
                "file %s/%s/%s: records %s",
                arrival["tenant"],
                arrival["connector"],
                arrival["path"],
                dict(result.changes),
            )

    async def _publish_outcome(self, event: dict[str, Any]) -> None:
        # Keyed by connector: its outcomes share one partition, whose owner polls it
        # (streams.ownership).
        key = connector_key(event["tenant"], event["connector"]).encode()
        value = self.codec.encode(FILE_OUTCOME, event)
        await self.producer.send_batch([(self.topics.file_outcomes, key, value)])


def _outcome_row(
    arrival: dict[str, Any], result: FileResult, outcome: str, now: dt.datetime
) -> dict[str, Any]:
    """The ``file_outcomes`` row of a file version (progress while ``processing``)."""
    return {
        "file_id": arrival["file_id"],
        "tenant": arrival["tenant"],
        "connector": arrival["connector"],
        "path": arrival["path"],
        "version_id": arrival["version_id"],
        "outcome": outcome,
        "rows_accepted": result.accepted,
        "rows_rejected": sum(result.rejected.values()),
        "rejected_by_reason": json.dumps(dict(result.rejected), sort_keys=True),
        "rows_done": result.rows_done,
        "lines_read": result.lines_read,
        "reason": result.reason if outcome != "processing" else None,
        "decided_at": now,
    }


def _outcome_event(row: dict[str, Any]) -> dict[str, Any]:
    """The FileOutcome event of a recorded ``file_outcomes`` row."""
    decided = row["decided_at"]
    if decided.tzinfo is None:  # SQLite returns naive UTC
        decided = decided.replace(tzinfo=dt.UTC)
    return {
        "file_id": row["file_id"],
        "tenant": row["tenant"],
        "connector": row["connector"],
        "path": row["path"],
        "version_id": row["version_id"],
        "outcome": row["outcome"],
        "rows_accepted": row["rows_accepted"],
        "rows_rejected": row["rows_rejected"],
        "rejected_by_reason": json.loads(row.get("rejected_by_reason") or "{}"),
        "reason": row["reason"],
        "decided_at": decided,
        "lines_read": row.get("lines_read") or 0,
        "records_by_change": {},
    }


def _resume(result: FileResult, prior: dict[str, Any]) -> None:
    """Carry the counts of chunks already published into ``result``."""
    result.accepted = int(prior["rows_accepted"])
    result.rejected = Counter(json.loads(prior.get("rejected_by_reason") or "{}"))
    result.rows_done = int(prior.get("rows_done") or 0)


def _young(session: _Session, arrival: dict[str, Any]) -> bool:
    """Whether the file is within its connector's incomplete grace (its tail may be written)."""
    age = (utcnow() - arrival["mtime"]).total_seconds()
    return bool(age < session.settings.poll.incomplete_grace_seconds)


def _is_media(path: str, ingest: ParseSettings) -> bool:
    try:
        return detect_format(path, ingest) == "media"
    except FileRejected:
        return False
