"""Recording + metadata bundles (seed 003): durable halves, pairing, updates, matching, timeouts.

A call is one row of ``recording_bundles``, keyed by tenant, source system and *call key* (the
recording's stem in ``paired`` and ``matched`` mode, the source's id in ``by_id`` mode), holding
a recording half (media-store ref, checksum, size, duration, what its name says) and a metadata
half (the flat fields, which file, how many versions). :class:`FileProcessor
<streams.ingest.files.FileProcessor>` reads each file (copies a recording to the media store,
reads a metadata file) and hands the half to :class:`BundleStore`, which

- records the half and reads the other **in one transaction** (PostgreSQL: the row is locked by
  the upsert and read ``FOR UPDATE``; SQLite: the first statement is a write, so writers are
  serialised), so a recording and its metadata processed at the same moment on two partitions or
  workers see each other exactly once;
- answers with the bundle as it now is; when it is complete (both halves; in ``by_id`` mode the
  metadata alone) the processor publishes the one :func:`conversation` built deterministically
  from it. It does so after *every* arrival that leaves the bundle complete, redeliveries
  included: the case store's delivery key (``file:<file_id>:1``) and content hash turn repeats
  into no-ops, so a call is never paired twice nor opened as two cases;
- takes a new version of a metadata file (another file, same call) as an update (version count
  + 1; the case gets version + 1 and is re-analysed; the recording is not copied again) while the
  clock is within ``update_window_hours`` of the call time, and refuses it after that
  (``metadata_update_too_late``: the bundle and the case stay as they were). An arrival older
  than the half already recorded (a redelivery overtaken by a newer upload) changes nothing;
- in ``matched`` mode, serialises each tenant's source system (a lock row), looks for unpaired
  candidates on the other side (:func:`match`): exactly one pairs and the fields that matched are
  recorded; none waits (metadata in ``pending_metadata``); several is ``ambiguous_match``,
  never a guess.

:class:`BundleSweeper` reports, once, recordings still without metadata after
``metadata_timeout_seconds`` (``metadata_missing``) and, in matched mode, metadata still
unmatched (``no_match``): a row is claimed with a conditional UPDATE and its dead letter written
to the case store's outbox in the same transaction, so any number of workers report it once.
The clock of both is injectable (``clock``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    case,
    delete,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.cases.store import outbox
from streams.db import Database, dialect_insert, metadata
from streams.deadletters import DeadLetters
from streams.ingest.metadata import METADATA_SUFFIXES
from streams.ingest.parse import FileRejected, parse_timestamp
from streams.ingest.recnames import RecordingName
from streams.ingest.recordings import RecordingSettings
from streams.media import MEDIA_SUFFIXES
from streams.metrics import Metrics
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: Longest call key (the Conversation's external id limit).
MAX_KEY_CHARS = 512

recording_bundles = Table(
    "recording_bundles",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("source_system", String(128), primary_key=True),
    Column("call_key", String(MAX_KEY_CHARS), primary_key=True),
    Column("mode", String(16), nullable=False),
    # the recording half
    Column("rec_file_id", String(32)),
    Column("rec_connector", String(64)),
    Column("rec_path", String(1024)),
    Column("rec_ref", Text),  # media-store uri#sha256=<hex>: the conversation's recording_ref
    Column("rec_sha256", String(64)),
    Column("rec_size", BigInteger),
    Column("rec_duration", Float),  # seconds, from the media header; None when unknown
    Column("rec_fields", Text),  # JSON: what the name says (uid, direction, session_id, ...)
    Column("rec_call_time", DateTime(timezone=True)),
    Column("rec_announced_at", DateTime(timezone=True)),
    Column("rec_arrived_at", DateTime(timezone=True)),
    # the metadata half
    Column("meta_file_id", String(32)),
    Column("meta_connector", String(64)),
    Column("meta_path", String(1024)),
    Column("meta_fields", Text),  # JSON object of the flat fields
    Column("meta_call_time", DateTime(timezone=True)),  # from its name or metadata_keys
    Column("meta_versions", Integer),  # metadata files applied: 1, then + 1 per update
    Column("meta_announced_at", DateTime(timezone=True)),
    Column("meta_first_at", DateTime(timezone=True)),  # first metadata processed
    Column("meta_arrived_at", DateTime(timezone=True)),
    Column("match_fields", String(64)),  # matched mode: the fields that matched, comma-separated
    Column("missing_reported_at", DateTime(timezone=True)),  # metadata_missing reported
    Index("ix_recording_bundles_waiting", "tenant", "rec_connector", "missing_reported_at"),
    Index("ix_recording_bundles_meta_path", "tenant", "meta_connector", "meta_path"),
)

#: matched mode: metadata files not matched to a recording yet (one row per connector path).
pending_metadata = Table(
    "pending_metadata",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("connector", String(64), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("source_system", String(128), nullable=False),
    Column("file_id", String(32), nullable=False),
    Column("fields", Text, nullable=False),
    Column("call_time", DateTime(timezone=True)),
    Column("announced_at", DateTime(timezone=True), nullable=False),
    Column("arrived_at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True)),  # no_match reported
    Index("ix_pending_metadata_source", "tenant", "source_system"),
)

#: matched mode: one row per tenant and source system, written first by every matched-mode
#: transaction so that two arrivals never search for each other at the same moment and miss.
bundle_locks = Table(
    "bundle_locks",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("source_system", String(128), primary_key=True),
    Column("touched_at", DateTime(timezone=True), nullable=False),
)


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=dt.UTC)
    return value


# -- what a file is -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """What a file of a bundle connector is: ``recording`` or ``metadata``.

    ``name`` is what the recording's name says (None: it does not fit the pattern, the file is
    rejected ``bad_recording_name``); for metadata it is what its name says in paired mode.
    ``key`` is the call key, None for metadata in matched mode (it has none until matched).
    """

    kind: str
    key: str | None
    name: RecordingName | None = None


def classify(path: str, rec: RecordingSettings) -> Role | None:
    """Return the role of a file on a bundle connector, or None: the CSV/chat path as before.

    Recordings are the media formats. Metadata are the metadata formats; in paired mode only
    when the name fits ``name_pattern`` (so a daily CSV export on the same connector still goes
    the CSV path); in by_id and matched mode every metadata-format file.
    """
    pure = PurePosixPath(path)
    suffix = pure.suffix.lower()
    if suffix in MEDIA_SUFFIXES:
        name = rec.names().match(pure.name)
        if name is None:
            return Role("recording", None, None)
        key = name.fields.get("id") if rec.mode == "by_id" else name.stem
        return Role("recording", key or None, name)
    if suffix not in METADATA_SUFFIXES:
        return None
    if rec.mode == "paired":
        name = rec.names().match(pure.name)
        return Role("metadata", name.stem, name) if name is not None else None
    if rec.mode == "by_id":
        return Role("metadata", pure.stem or None, None)
    return Role("metadata", None, None)


def check_key(key: str | None) -> str | None:
    """Return why ``key`` cannot key a call (empty, too long, control characters), or None."""
    if not key:
        return "the name gives no call key"
    if len(key) > MAX_KEY_CHARS:
        return f"the call key has {len(key)} characters (at most {MAX_KEY_CHARS})"
    if re.search(r"[\x00-\x1f\x7f]", key):
        return "the call key has a control character"
    return None


# -- matching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchFacts:
    """The fields one side of a call offers for matching (None: not known on this side)."""

    uid: str | None = None
    call_time: dt.datetime | None = None
    ani: str | None = None
    dnis: str | None = None


def _digits(number: str | None) -> str | None:
    if number is None:
        return None
    only = re.sub(r"\D", "", number)
    return only or None


def facts_of_name(name: RecordingName) -> MatchFacts:
    """What a recording's name offers for matching."""
    f = name.fields
    return MatchFacts(f.get("uid") or None, name.call_time, f.get("ani"), f.get("dnis"))


def facts_of_metadata(fields: dict[str, str], rec: RecordingSettings) -> MatchFacts:
    """What a metadata file offers for matching (``metadata_keys``); an unreadable call time
    counts as unknown."""
    keys = rec.metadata_keys
    return MatchFacts(
        fields.get(keys.uid) or None,
        metadata_call_time(fields, rec),
        fields.get(keys.ani) or None,
        fields.get(keys.dnis) or None,
    )


def metadata_call_time(fields: dict[str, str], rec: RecordingSettings) -> dt.datetime | None:
    """The call time a metadata file states under ``metadata_keys.call_time``, or None."""
    raw = fields.get(rec.metadata_keys.call_time)
    if not raw:
        return None
    try:
        return parse_timestamp(raw, rec.timezone)
    except ValueError:
        return None


def match(meta: MatchFacts, recording: MatchFacts, rec: RecordingSettings) -> tuple[str, ...]:
    """Return the fields on which metadata and a recording agree, or ``()`` if they do not match.

    Each of ``match_fields`` is compared when both sides have it: user ids equal (ignoring
    case), call times at most ``call_time_tolerance_seconds`` apart, phone numbers equal digit
    for digit. One disagreement, or nothing to compare, is no match.
    """
    compared: list[str] = []
    for name in rec.match_fields:
        a, b = getattr(meta, name), getattr(recording, name)
        if a is None or b is None:
            continue
        if name == "call_time":
            same = abs((a - b).total_seconds()) <= rec.call_time_tolerance_seconds
        elif name == "uid":
            same = a.strip().casefold() == b.strip().casefold()
        else:
            same = _digits(a) == _digits(b)
        if not same:
            return ()
        compared.append(name)
    return tuple(compared)


# -- the bundle -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingHalf:
    """A recording safely in the media store."""

    file_id: str
    connector: str
    path: str
    ref: str
    sha256: str
    size: int
    duration_seconds: float | None
    fields: dict[str, str]
    call_time: dt.datetime | None
    announced_at: dt.datetime


@dataclass(frozen=True)
class MetadataHalf:
    """A metadata file, read."""

    file_id: str
    connector: str
    path: str
    fields: dict[str, str]
    call_time: dt.datetime | None
    announced_at: dt.datetime


@dataclass(frozen=True)
class Bundle:
    """One call's row of ``recording_bundles``."""

    tenant: str
    source_system: str
    call_key: str
    mode: str
    rec_file_id: str | None = None
    rec_connector: str | None = None
    rec_path: str | None = None
    rec_ref: str | None = None
    rec_sha256: str | None = None
    rec_size: int | None = None
    rec_duration: float | None = None
    rec_fields: dict[str, str] = field(default_factory=dict)
    rec_call_time: dt.datetime | None = None
    rec_announced_at: dt.datetime | None = None
    rec_arrived_at: dt.datetime | None = None
    meta_file_id: str | None = None
    meta_connector: str | None = None
    meta_path: str | None = None
    meta_fields: dict[str, str] = field(default_factory=dict)
    meta_call_time: dt.datetime | None = None
    meta_versions: int = 0
    meta_announced_at: dt.datetime | None = None
    meta_first_at: dt.datetime | None = None
    meta_arrived_at: dt.datetime | None = None
    match_fields: str | None = None
    missing_reported_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> Bundle:
        """Build from a database row (JSON columns decoded, times made aware)."""
        values = dict(row._mapping)
        for name in ("rec_fields", "meta_fields"):
            values[name] = json.loads(values[name]) if values[name] else {}
        for name, value in values.items():
            if isinstance(value, dt.datetime):
                values[name] = _aware(value)
        values["meta_versions"] = values["meta_versions"] or 0
        return cls(**values)

    @property
    def has_recording(self) -> bool:
        """Whether the recording half is there."""
        return self.rec_file_id is not None

    @property
    def has_metadata(self) -> bool:
        """Whether the metadata half is there."""
        return self.meta_file_id is not None

    @property
    def complete(self) -> bool:
        """Whether a conversation is due: both halves, or in by_id mode the metadata alone."""
        if self.mode == "by_id":
            return self.has_metadata
        return self.has_recording and self.has_metadata

    @property
    def call_time(self) -> dt.datetime | None:
        """The call time: the recording's name, else the metadata's name or fields."""
        return self.rec_call_time or self.meta_call_time

    @property
    def reference_time(self) -> dt.datetime | None:
        """What the update window counts from: the call time, else the first metadata."""
        return self.call_time or self.meta_first_at


def update_too_late(
    bundle: Bundle, now: dt.datetime, rec: RecordingSettings
) -> dt.timedelta | None:
    """How far past ``update_window_hours`` an update at ``now`` comes, or None if in time."""
    ref = bundle.reference_time
    if ref is None:
        return None
    late = now - ref - dt.timedelta(hours=rec.update_window_hours)
    return late if late > dt.timedelta(0) else None


_DIRECTIONS = {"in": "inbound", "out": "outbound", "int": "internal"}
_NAME_FIELDS = frozenset({"uid", "direction", "ani", "dnis", "id"})  # fields, or the key


def _direction(value: str | None) -> str | None:
    if not value:
        return None
    low = value.strip().lower()
    low = _DIRECTIONS.get(low, low)
    return low if low in ("inbound", "outbound", "internal") else None


def conversation(bundle: Bundle, rec: RecordingSettings, source: dict[str, Any]) -> dict[str, Any]:
    """Build the call's Conversation from the bundle alone (deterministic: any arrival that
    completes or repeats it builds the same content; only ``source`` names that arrival).

    The name gives the call time, user, direction, ANI/DNIS (the metadata fills what the name
    lacks); the metadata fields and the name's other fields (session id, custom tokens) go to
    ``metadata``; matched mode adds ``match.fields``. ``call_time_is`` says whether the name's
    time is the start or the end; the duration (when the media header gives one) gives the
    other end. Without a call time, the first metadata's processing time stands in.
    """
    meta = bundle.meta_fields
    name = bundle.rec_fields
    keys = rec.metadata_keys
    when = bundle.call_time or bundle.meta_first_at or bundle.rec_arrived_at
    if when is None:  # a complete bundle always has one of them
        raise ValueError(f"bundle {bundle.call_key!r} has no time at all")
    duration = (
        dt.timedelta(seconds=bundle.rec_duration) if bundle.rec_duration is not None else None
    )
    started, ended = when, None
    if duration is not None:
        if rec.call_time_is == "end" and bundle.call_time is not None:
            started, ended = when - duration, when
        else:
            ended = when + duration
    extra = {k: v for k, v in name.items() if k not in _NAME_FIELDS}
    fields = {**extra, **meta}
    if bundle.match_fields:
        fields["match.fields"] = bundle.match_fields
    return {
        "tenant": bundle.tenant,
        "source_system": bundle.source_system,
        "external_interaction_id": bundle.call_key,
        "channel": "voice",
        "direction": _direction(name.get("direction") or meta.get("direction")),
        "started_at": started,
        "ended_at": ended,
        "agent_id": name.get("uid") or meta.get(keys.uid) or None,
        "agent_name": meta.get("agent_name") or None,
        "team": meta.get("team") or None,
        "campaign": meta.get("campaign") or None,
        "ani": name.get("ani") or meta.get(keys.ani) or None,
        "dnis": name.get("dnis") or meta.get(keys.dnis) or None,
        "recording_ref": bundle.rec_ref,
        "transcript_ref": None,
        "turns": [],
        "metadata": fields,
        "source": source,
        "duration_ms": round(duration.total_seconds() * 1000) if duration is not None else None,
    }


# -- the durable state ----------------------------------------------------------------------------


@dataclass
class Step:
    """What recording one half did.

    ``bundle``: the call as it now is (None when the half was not recorded). ``rejected``:
    (reason, message) when the file is refused as a whole (``metadata_update_too_late``,
    ``ambiguous_match`` for metadata). ``report``: (reason, message) to dead-letter while the
    file still counts as processed (a recording whose match is ambiguous waits).
    """

    bundle: Bundle | None = None
    rejected: tuple[str, str] | None = None
    report: tuple[str, str] | None = None
    update: bool = False


def _rec_values(half: RecordingHalf, now: dt.datetime) -> dict[str, Any]:
    return {
        "rec_file_id": half.file_id,
        "rec_connector": half.connector,
        "rec_path": half.path,
        "rec_ref": half.ref,
        "rec_sha256": half.sha256,
        "rec_size": half.size,
        "rec_duration": half.duration_seconds,
        "rec_fields": json.dumps(half.fields, sort_keys=True),
        "rec_call_time": half.call_time,
        "rec_announced_at": half.announced_at,
        "rec_arrived_at": now,
    }


class BundleRejected(FileRejected):
    """A bundle file refused for a reason about the call, not its content (stage ``bundle``)."""

    stage = "bundle"


class BundleStore:
    """The bundle tables in the case store's database (see the module doc)."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    # -- reads --------------------------------------------------------------------------------

    async def get(self, tenant: str, source_system: str, key: str) -> Bundle | None:
        """Return one call's bundle, or None."""
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(_by_key(tenant, source_system, key))).first()
        return Bundle.from_row(row) if row is not None else None

    async def recording_of(
        self, tenant: str, source_system: str, key: str, file_id: str
    ) -> Bundle | None:
        """Return the bundle if it already holds this very recording file (no second copy)."""
        bundle = await self.get(tenant, source_system, key)
        if bundle is not None and bundle.rec_file_id == file_id:
            return bundle
        return None

    # -- writes -------------------------------------------------------------------------------

    async def add_recording(
        self,
        tenant: str,
        source_system: str,
        key: str,
        mode: str,
        half: RecordingHalf,
        rec: RecordingSettings,
    ) -> Step:
        """Record a recording half and return the call as it now is (one transaction)."""
        now = self.clock()
        async with self.db.engine.begin() as conn:
            if mode == "matched":
                await self._lock(conn, tenant, source_system, now)
            values = _rec_values(half, now)
            insert = dialect_insert(self.db.engine, recording_bundles).values(
                tenant=tenant, source_system=source_system, call_key=key, mode=mode, **values
            )
            table = recording_bundles.c
            newer = table.rec_announced_at.is_(None) | (
                table.rec_announced_at <= insert.excluded.rec_announced_at
            )
            same_file = table.rec_file_id == insert.excluded.rec_file_id
            set_: dict[str, Any] = {c: insert.excluded[c] for c in values}
            # a redelivery keeps its first arrival time: the metadata timeout counts from it
            set_["rec_arrived_at"] = case(
                (same_file, table.rec_arrived_at), else_=insert.excluded.rec_arrived_at
            )
            stmt = insert.on_conflict_do_update(
                index_elements=["tenant", "source_system", "call_key"],
                set_=set_,
                where=newer,  # an older recording redelivered after a newer one changes nothing
            )
            await conn.execute(stmt)
            bundle = await self._read(conn, tenant, source_system, key)
            if mode != "matched" or bundle.has_metadata:
                return Step(bundle)
            return await self._match_recording(conn, bundle, half, rec, now)

    async def add_metadata(
        self,
        tenant: str,
        source_system: str,
        key: str,
        mode: str,
        half: MetadataHalf,
        rec: RecordingSettings,
    ) -> Step:
        """Record a metadata half (paired and by_id mode) and return the call as it now is."""
        now = self.clock()
        async with self.db.engine.begin() as conn:
            insert = dialect_insert(self.db.engine, recording_bundles).values(
                tenant=tenant, source_system=source_system, call_key=key, mode=mode
            )
            await conn.execute(insert.on_conflict_do_nothing())  # write first: see module doc
            bundle = await self._read(conn, tenant, source_system, key)
            return await self._apply_metadata(conn, bundle, half, rec, now, None)

    async def add_matched_metadata(
        self, tenant: str, source_system: str, half: MetadataHalf, rec: RecordingSettings
    ) -> Step:
        """Record metadata in matched mode: an update of the call it was matched to before,
        a match with exactly one unpaired recording, or a wait (see the module doc)."""
        now = self.clock()
        async with self.db.engine.begin() as conn:
            await self._lock(conn, tenant, source_system, now)
            c = recording_bundles.c
            earlier = (
                await conn.execute(
                    select(recording_bundles).where(
                        c.tenant == tenant,
                        c.source_system == source_system,
                        c.meta_connector == half.connector,
                        c.meta_path == half.path,
                    )
                )
            ).first()
            if earlier is not None:  # a new version of metadata matched before
                bundle = Bundle.from_row(earlier)
                return await self._apply_metadata(conn, bundle, half, rec, now, None)
            facts = facts_of_metadata(half.fields, rec)
            found = await self._recording_candidates(conn, tenant, source_system, facts, rec)
            if len(found) > 1:
                keys = ", ".join(sorted(b.call_key for b, _f in found)[:5])
                await conn.execute(_delete_pending(tenant, half.connector, half.path))
                return Step(
                    rejected=(
                        "ambiguous_match",
                        f"matches {len(found)} unpaired recordings ({keys}); not guessing",
                    )
                )
            if not found:
                insert = dialect_insert(self.db.engine, pending_metadata)
                row = {
                    "tenant": tenant,
                    "connector": half.connector,
                    "path": half.path,
                    "source_system": source_system,
                    "file_id": half.file_id,
                    "fields": json.dumps(half.fields, sort_keys=True),
                    "call_time": facts.call_time,
                    "announced_at": half.announced_at,
                    "arrived_at": now,
                    "reported_at": None,
                }
                stmt = insert.values(**row).on_conflict_do_update(
                    index_elements=["tenant", "connector", "path"],
                    set_={k: insert.excluded[k] for k in row if k not in ("arrived_at",)},
                    where=pending_metadata.c.announced_at <= insert.excluded.announced_at,
                )
                await conn.execute(stmt)
                return Step()
            bundle, fields = found[0]
            await conn.execute(_delete_pending(tenant, half.connector, half.path))
            return await self._apply_metadata(conn, bundle, half, rec, now, ",".join(fields))

    async def _apply_metadata(
        self,
        conn: AsyncConnection,
        bundle: Bundle,
        half: MetadataHalf,
        rec: RecordingSettings,
        now: dt.datetime,
        matched: str | None,
    ) -> Step:
        """Set the metadata half of a locked bundle: first version, update or repeat."""
        if bundle.meta_file_id == half.file_id:
            return Step(bundle)  # a redelivery: nothing changes
        if bundle.meta_announced_at is not None and half.announced_at < bundle.meta_announced_at:
            return Step(bundle)  # older than what is applied: overtaken, nothing changes
        update_ = bundle.has_metadata
        if update_:
            late = update_too_late(bundle, now, rec)
            if late is not None:
                ref = bundle.reference_time
                assert ref is not None  # noqa: S101 - late implies a reference time
                return Step(
                    bundle,
                    rejected=(
                        "metadata_update_too_late",
                        f"a metadata update {(now - ref).total_seconds() / 3600:.1f} h after "
                        f"the call time {ref.isoformat()} (update_window_hours is "
                        f"{rec.update_window_hours:g}); the call keeps its metadata",
                    ),
                )
        values: dict[str, Any] = {
            "meta_file_id": half.file_id,
            "meta_connector": half.connector,
            "meta_path": half.path,
            "meta_fields": json.dumps(half.fields, sort_keys=True),
            "meta_call_time": half.call_time,
            "meta_versions": bundle.meta_versions + 1,
            "meta_announced_at": half.announced_at,
            "meta_first_at": bundle.meta_first_at or now,
            "meta_arrived_at": now,
        }
        if matched is not None:
            values["match_fields"] = matched
        await conn.execute(
            update(recording_bundles)
            .where(*_pk(bundle.tenant, bundle.source_system, bundle.call_key))
            .values(**values)
        )
        fresh = await self._read(conn, bundle.tenant, bundle.source_system, bundle.call_key)
        return Step(fresh, update=update_)

    async def _match_recording(
        self,
        conn: AsyncConnection,
        bundle: Bundle,
        half: RecordingHalf,
        rec: RecordingSettings,
        now: dt.datetime,
    ) -> Step:
        """matched mode: pair a recording without metadata with the one pending metadata."""
        facts = MatchFacts(
            half.fields.get("uid") or None,
            half.call_time,
            half.fields.get("ani"),
            half.fields.get("dnis"),
        )
        p = pending_metadata.c
        stmt = select(pending_metadata).where(
            p.tenant == bundle.tenant, p.source_system == bundle.source_system
        )
        if half.call_time is not None and "call_time" in rec.match_fields:
            tol = dt.timedelta(seconds=rec.call_time_tolerance_seconds)
            stmt = stmt.where(
                p.call_time.is_(None)
                | and_(p.call_time >= half.call_time - tol, p.call_time <= half.call_time + tol)
            )
        found = []
        for row in (await conn.execute(stmt.limit(1000))).all():
            fields = json.loads(row.fields)
            agreed = match(facts_of_metadata(fields, rec), facts, rec)
            if agreed:
                found.append((row, fields, agreed))
        if not found:
            return Step(bundle)
        if len(found) > 1:
            paths = ", ".join(sorted(r.path for r, _f, _a in found)[:5])
            return Step(
                bundle,
                report=(
                    "ambiguous_match",
                    f"{len(found)} unmatched metadata files match this recording ({paths}); "
                    "not guessing: it waits for its metadata",
                ),
            )
        row, fields, agreed = found[0]
        await conn.execute(_delete_pending(row.tenant, row.connector, row.path))
        meta = MetadataHalf(
            row.file_id,
            row.connector,
            row.path,
            fields,
            _aware(row.call_time),
            _aware(row.announced_at) or now,
        )
        return await self._apply_metadata(conn, bundle, meta, rec, now, ",".join(agreed))

    async def _recording_candidates(
        self,
        conn: AsyncConnection,
        tenant: str,
        source_system: str,
        facts: MatchFacts,
        rec: RecordingSettings,
    ) -> list[tuple[Bundle, tuple[str, ...]]]:
        c = recording_bundles.c
        stmt = select(recording_bundles).where(
            c.tenant == tenant,
            c.source_system == source_system,
            c.mode == "matched",
            c.rec_file_id.is_not(None),
            c.meta_file_id.is_(None),
        )
        if facts.call_time is not None and "call_time" in rec.match_fields:
            tol = dt.timedelta(seconds=rec.call_time_tolerance_seconds)
            stmt = stmt.where(
                c.rec_call_time.is_(None)
                | and_(
                    c.rec_call_time >= facts.call_time - tol,
                    c.rec_call_time <= facts.call_time + tol,
                )
            )
        found = []
        for row in (await conn.execute(stmt.limit(1000))).all():
            bundle = Bundle.from_row(row)
            recording = MatchFacts(
                bundle.rec_fields.get("uid") or None,
                bundle.rec_call_time,
                bundle.rec_fields.get("ani"),
                bundle.rec_fields.get("dnis"),
            )
            agreed = match(facts, recording, rec)
            if agreed:
                found.append((bundle, agreed))
        return found

    async def _lock(
        self, conn: AsyncConnection, tenant: str, source_system: str, now: dt.datetime
    ) -> None:
        insert = dialect_insert(self.db.engine, bundle_locks).values(
            tenant=tenant, source_system=source_system, touched_at=now
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["tenant", "source_system"],
                set_={"touched_at": insert.excluded.touched_at},
            )
        )

    async def _read(
        self, conn: AsyncConnection, tenant: str, source_system: str, key: str
    ) -> Bundle:
        stmt = _by_key(tenant, source_system, key)
        if self.db.engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return Bundle.from_row((await conn.execute(stmt)).one())

    # -- timeouts -----------------------------------------------------------------------------

    async def report_missing(
        self,
        tenant: str,
        connector: str,
        after_seconds: float,
        build: Callable[[Bundle], tuple[str, bytes, bytes]],
        limit: int = 500,
    ) -> int:
        """Claim the connector's recordings without metadata for ``after_seconds`` that were
        not reported yet, and queue ``build(bundle)`` (a dead letter) for each in the outbox,
        in one transaction; return how many."""
        now = self.clock()
        cutoff = now - dt.timedelta(seconds=after_seconds)
        c = recording_bundles.c
        waiting = and_(
            c.tenant == tenant,
            c.rec_connector == connector,
            c.rec_file_id.is_not(None),
            c.meta_file_id.is_(None),
            c.missing_reported_at.is_(None),
            c.rec_arrived_at <= cutoff,
        )
        async with self.db.engine.begin() as conn:
            rows = (await conn.execute(select(recording_bundles).where(waiting).limit(limit))).all()
            claimed = 0
            for row in rows:
                bundle = Bundle.from_row(row)
                done = await conn.execute(
                    update(recording_bundles)
                    .where(*_pk(bundle.tenant, bundle.source_system, bundle.call_key), waiting)
                    .values(missing_reported_at=now)
                )
                if done.rowcount == 1:  # another worker did not claim it first
                    await conn.execute(outbox.insert(), [_outbox_row(build(bundle), now)])
                    claimed += 1
        return claimed

    async def report_unmatched(
        self,
        tenant: str,
        connector: str,
        after_seconds: float,
        build: Callable[[Any], tuple[str, bytes, bytes]],
        limit: int = 500,
    ) -> int:
        """Like :meth:`report_missing`, for matched-mode metadata still unmatched (no_match)."""
        now = self.clock()
        cutoff = now - dt.timedelta(seconds=after_seconds)
        p = pending_metadata.c
        waiting = and_(
            p.tenant == tenant,
            p.connector == connector,
            p.reported_at.is_(None),
            p.arrived_at <= cutoff,
        )
        async with self.db.engine.begin() as conn:
            rows = (await conn.execute(select(pending_metadata).where(waiting).limit(limit))).all()
            claimed = 0
            for row in rows:
                done = await conn.execute(
                    update(pending_metadata)
                    .where(p.path == row.path, waiting)
                    .values(reported_at=now)
                )
                if done.rowcount == 1:
                    await conn.execute(outbox.insert(), [_outbox_row(build(row), now)])
                    claimed += 1
        return claimed


def _pk(tenant: str, source_system: str, key: str) -> Sequence[Any]:
    c = recording_bundles.c
    return (c.tenant == tenant, c.source_system == source_system, c.call_key == key)


def _by_key(tenant: str, source_system: str, key: str) -> Any:
    return select(recording_bundles).where(*_pk(tenant, source_system, key))


def _delete_pending(tenant: str, connector: str, path: str) -> Any:
    p = pending_metadata.c
    return delete(pending_metadata).where(
        p.tenant == tenant, p.connector == connector, p.path == path
    )


def _outbox_row(record: tuple[str, bytes, bytes], now: dt.datetime) -> dict[str, Any]:
    topic, key, value = record
    return {
        "topic": topic,
        "key": key,
        "value": value,
        "created_at": now,
        "announced_at": None,
    }


# -- the sweep ------------------------------------------------------------------------------------


BundleConnectors = Sequence[tuple[str, str, RecordingSettings]]
"""(tenant, connector, its recording settings) of every bundle connector."""


class BundleSweeper:
    """Reports overdue bundles of every bundle connector, periodically (see the module doc).

    ``connectors`` is a list, or an async function returning the current list (connectors
    created through the API come and go); ``wake`` is called after rows were queued (the outbox
    relay's ``wake``).
    """

    def __init__(
        self,
        store: BundleStore,
        connectors: BundleConnectors | Callable[[], Awaitable[BundleConnectors]],
        dead: DeadLetters,
        metrics: Metrics,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.connectors = connectors
        self.dead = dead
        self.metrics = metrics
        self.wake = wake
        self.interval = self._interval(connectors if isinstance(connectors, Sequence) else [])
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _interval(connectors: BundleConnectors) -> float:
        shortest = min((r.metadata_timeout_seconds for _t, _c, r in connectors), default=60.0)
        return max(0.5, min(30.0, shortest / 3))

    async def _current(self) -> BundleConnectors:
        if isinstance(self.connectors, Sequence):
            return self.connectors
        found = await self.connectors()
        self.interval = self._interval(found)
        return found

    async def start(self) -> None:
        """Start sweeping (nothing to do without bundle connectors)."""
        if not isinstance(self.connectors, Sequence) or self.connectors:
            self._task = asyncio.create_task(self._loop(), name="bundle-sweeper")

    async def stop(self) -> None:
        """Stop sweeping."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a database outage: try again on the next tick
                log.exception("bundle sweep failed; retrying in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """Report what is overdue now; return how many reports were queued."""
        total = 0
        for tenant, connector, rec in await self._current():
            timeout = rec.metadata_timeout_seconds
            missing = await self.store.report_missing(
                tenant, connector, timeout, functools.partial(self._missing, timeout=timeout)
            )
            if missing:
                self.metrics.recordings_metadata_missing.labels(tenant=tenant).inc(missing)
                log.warning(
                    "%s/%s: %d recording(s) without metadata after %.0f s",
                    tenant,
                    connector,
                    missing,
                    timeout,
                )
            total += missing
            if rec.mode == "matched":
                unmatched = await self.store.report_unmatched(
                    tenant, connector, timeout, functools.partial(self._unmatched, timeout=timeout)
                )
                total += unmatched
        if total:
            self.wake()
        return total

    def _missing(self, bundle: Bundle, timeout: float) -> tuple[str, bytes, bytes]:
        return self.dead.build(
            tenant=bundle.tenant,
            connector=bundle.rec_connector or "",
            file_id=bundle.rec_file_id or "",
            path=bundle.rec_path or "",
            reason="metadata_missing",
            message=f"recording {bundle.call_key!r} has had no metadata for {timeout:g} s "
            "(metadata_timeout_seconds); it still pairs when its metadata arrives",
            stage="bundle",
        )

    def _unmatched(self, row: Any, timeout: float) -> tuple[str, bytes, bytes]:
        return self.dead.build(
            tenant=row.tenant,
            connector=row.connector,
            file_id=row.file_id,
            path=row.path,
            reason="no_match",
            message=f"metadata matched no recording for {timeout:g} s "
            "(metadata_timeout_seconds); it still pairs when a matching recording arrives",
            stage="bundle",
        )
