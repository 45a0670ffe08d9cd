"""Parse conversation exports (CSV/TSV) and chat transcripts (JSON) into Conversation dicts.

Contract: :func:`parse` streams a binary file object and yields one :class:`ParsedRow` per data
row (CSV/TSV) or one per document (JSON). A bad row is a :class:`ParsedRow` with ``error`` set
(reason code, column, message) and never stops the rest of the file; a file that cannot be
read at all (no usable header, not JSON, too large) raises :class:`FileRejected`. Memory stays
bounded by the largest row (CSV) or ``max_document_bytes`` (JSON).

CSV/TSV: a header row is required; UTF-8 with or without BOM; CRLF or LF; quoted fields may hold
newlines. Invalid UTF-8 is detected per row (the row is rejected, the file goes on). Columns map
to Conversation fields through the connector's ``mapping`` (field -> column) or the built-in
aliases; every other non-empty column goes to ``metadata``.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHANNELS = ("voice", "chat", "email", "social")
DIRECTIONS = ("inbound", "outbound", "internal")
SPEAKERS = ("agent", "customer", "system")
#: Recordings are copied to the media store, not parsed (the seeds' supported formats).
MEDIA_SUFFIXES = frozenset(
    [
        ".wav",
        ".mp3",
        ".mp4",
        ".m4a",
        ".mpg",
        ".wma",
        ".webm",
        ".aiff",
        ".flac",
        ".ogg",
        ".gsm",
        ".arf",
        ".au",
    ]
)
EXCERPT = 512

#: Conversation field -> accepted source column names (lower case), used without a mapping.
ALIASES: dict[str, tuple[str, ...]] = {
    "external_interaction_id": (
        "external_interaction_id",
        "interaction_id",
        "call_id",
        "session_id",
        "conversation_id",
        "call_sid",
    ),
    "channel": ("channel", "media_type"),
    "direction": ("direction", "call_direction"),
    "started_at": ("started_at", "start_time", "call_start", "start"),
    "ended_at": ("ended_at", "end_time", "call_end", "end"),
    "agent_id": ("agent_id", "user_id", "agent"),
    "agent_name": ("agent_name", "user_name"),
    "team": ("team", "team_name", "skill"),
    "campaign": ("campaign", "campaign_name", "campaign_id"),
    "ani": ("ani", "customer_number", "caller_id", "from_number"),
    "dnis": ("dnis", "dialled_number", "dialed_number", "to_number"),
    "recording_ref": ("recording_ref", "recording_url", "recording"),
    "transcript_ref": ("transcript_ref", "transcript_url", "transcript"),
}
FIELDS = tuple(ALIASES)


class ParseSettings(BaseModel):
    """How one connector's files are read (connector setting ``ingest``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_system: str = Field(
        "default", description="Platform the files come from; part of the case key."
    )
    format: Literal["auto", "csv", "tsv", "chat_json"] = Field(
        "auto", description="auto: by extension (.csv, .tsv/.tab, .json)."
    )
    delimiter: str | None = Field(None, description="CSV delimiter (default ',' / TAB for TSV).")
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Conversation field -> source column, e.g. {external_interaction_id: CallID}.",
    )
    default_channel: Literal["voice", "chat", "email", "social"] = Field(
        "voice", description="Channel of rows that do not name one."
    )
    timezone: str = Field("UTC", description="Zone of timestamps written without an offset.")
    max_field_bytes: int = Field(1_000_000, ge=1024, description="Longest accepted CSV field.")
    max_document_bytes: int = Field(16_000_000, ge=1024, description="Largest JSON transcript.")

    @field_validator("mapping")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown Conversation field(s): {', '.join(unknown)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row was rejected (``reason`` is a bounded code)."""

    reason: str
    message: str
    column: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One data row: a Conversation dict (without tenant and source) or an error."""

    row: int
    line: int
    conversation: dict[str, Any] | None
    error: RowError | None
    excerpt: str


class FileRejected(Exception):
    """The file as a whole cannot be read; ``reason`` is a bounded code."""

    def __init__(self, reason: str, message: str, excerpt: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.excerpt = excerpt


class _RowInvalid(Exception):
    def __init__(self, reason: str, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.error = RowError(reason, message, column)


def detect_format(path: str, settings: ParseSettings) -> str:
    """Return csv, tsv or chat_json for a file, or raise FileRejected."""
    if settings.format != "auto":
        return settings.format
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".json":
        return "chat_json"
    if suffix in MEDIA_SUFFIXES:
        return "media"
    raise FileRejected("unsupported_format", f"no parser for {suffix or 'files without extension'}")


def parse(stream: BinaryIO, path: str, settings: ParseSettings) -> Iterator[ParsedRow]:
    """Yield every row of ``stream`` (see the module doc)."""
    fmt = detect_format(path, settings)
    if fmt == "media":
        raise ValueError("media files are stored, not parsed")
    if fmt == "chat_json":
        yield _parse_chat(stream, path, settings)
    else:
        delimiter = settings.delimiter or ("\t" if fmt == "tsv" else ",")
        yield from _parse_delimited(stream, delimiter, settings)


# -- values --------------------------------------------------------------------------------------


def parse_timestamp(value: str, zone: str) -> dt.datetime:
    """Parse ISO 8601 (or epoch seconds) into an aware datetime; naive ones get ``zone``."""
    text = value.strip()
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:40]!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=ZoneInfo(zone))
    return stamp.astimezone(dt.UTC)


def _has_bad_utf8(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _clean(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def build_conversation(values: Mapping[str, str], settings: ParseSettings) -> dict[str, Any]:
    """Apply business rules to mapped string values; raise _RowInvalid naming the column."""
    ext = (values.get("external_interaction_id") or "").strip()
    if not ext:
        raise _RowInvalid(
            "missing_id", "external interaction id is empty", "external_interaction_id"
        )
    channel = (values.get("channel") or settings.default_channel).strip().lower()
    if channel not in CHANNELS:
        raise _RowInvalid("invalid_value", f"unknown channel {channel!r}", "channel")
    direction = (values.get("direction") or "").strip().lower() or None
    if direction is not None and direction not in DIRECTIONS:
        raise _RowInvalid("invalid_value", f"unknown direction {direction!r}", "direction")
    stamps: dict[str, dt.datetime | None] = {}
    for name in ("started_at", "ended_at"):
        raw = (values.get(name) or "").strip()
        if not raw:
            stamps[name] = None
            continue
        try:
            stamps[name] = parse_timestamp(raw, settings.timezone)
        except (ValueError, OverflowError, OSError) as exc:
            raise _RowInvalid("bad_timestamp", str(exc), name) from None
    started, ended = stamps["started_at"], stamps["ended_at"]
    if started is None:
        raise _RowInvalid("bad_timestamp", "start time is empty", "started_at")
    if ended is not None and ended < started:
        raise _RowInvalid(
            "end_before_start", f"ends {ended.isoformat()} before it starts", "ended_at"
        )
    record: dict[str, Any] = {
        "external_interaction_id": ext,
        "channel": channel,
        "direction": direction,
        "started_at": started,
        "ended_at": ended,
    }
    for name in FIELDS:
        if name not in record:
            raw = (values.get(name) or "").strip()
            record[name] = raw or None
    return record


# -- CSV / TSV -----------------------------------------------------------------------------------


def _resolve_columns(header: list[str], settings: ParseSettings) -> dict[str, int]:
    lowered = {name.strip().lower(): i for i, name in enumerate(header)}
    exact = {name.strip(): i for i, name in enumerate(header)}
    columns: dict[str, int] = {}
    for field in FIELDS:
        if field in settings.mapping:
            source = settings.mapping[field]
            idx = exact.get(source, lowered.get(source.lower()))
            if idx is not None:
                columns[field] = idx
            continue
        for alias in ALIASES[field]:
            if alias in lowered:
                columns[field] = lowered[alias]
                break
    return columns


def _parse_delimited(
    stream: BinaryIO, delimiter: str, settings: ParseSettings
) -> Iterator[ParsedRow]:
    head = stream.read(3)
    prefix = b"" if head == codecs.BOM_UTF8 else head
    raw = io.BufferedReader(_Prefixed(prefix, stream), buffer_size=256 * 1024)
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
    csv.field_size_limit(settings.max_field_bytes)
    reader = csv.reader(text, delimiter=delimiter, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        raise FileRejected("missing_header", "the file is empty") from None
    except csv.Error as exc:
        raise FileRejected("missing_header", f"unreadable header: {exc}") from None
    header_text = delimiter.join(header)
    if _has_bad_utf8(header_text):
        raise FileRejected("invalid_utf8", "the header is not valid UTF-8", _clean(header_text))
    columns = _resolve_columns(header, settings)
    if "external_interaction_id" not in columns:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ",;\t|"):
            hint = f" (one column only: is the delimiter {delimiter!r} right?)"
        wanted = settings.mapping.get("external_interaction_id", "external_interaction_id")
        raise FileRejected(
            "missing_header",
            f"header has no {wanted!r} column{hint}",
            header_text[:EXCERPT],
        )
    names = [h.strip() for h in header]
    mapped = set(columns.values())
    extra = [(i, names[i]) for i in range(len(names)) if i not in mapped and names[i]]
    width = len(header)
    row_no = 0
    line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row_no += 1
            reason = "field_too_large" if "field limit" in str(exc) else "malformed_row"
            yield ParsedRow(row_no, line, None, RowError(reason, str(exc)), "")
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not fields or fields == [""]:
            continue  # blank line
        row_no += 1
        excerpt = _clean(delimiter.join(fields))[:EXCERPT]
        try:
            if len(fields) != width:
                raise _RowInvalid(
                    "wrong_column_count", f"{len(fields)} columns, header has {width}"
                )
            for i, value in enumerate(fields):
                if _has_bad_utf8(value):
                    raise _RowInvalid("invalid_utf8", "not valid UTF-8", names[i] or str(i))
            values = {field: fields[i] for field, i in columns.items()}
            record = build_conversation(values, settings)
            record["turns"] = []
            record["metadata"] = {name: fields[i] for i, name in extra if fields[i] != ""}
        except _RowInvalid as bad:
            yield ParsedRow(row_no, start, None, bad.error, excerpt)
            continue
        yield ParsedRow(row_no, start, record, None, excerpt)


class _Prefixed(io.RawIOBase):
    """A raw stream that first returns ``prefix`` then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


# -- chat transcripts ----------------------------------------------------------------------------


def _parse_chat(stream: BinaryIO, path: str, settings: ParseSettings) -> ParsedRow:
    data = stream.read(settings.max_document_bytes + 1)
    if len(data) > settings.max_document_bytes:
        raise FileRejected("too_large", f"transcript exceeds {settings.max_document_bytes} bytes")
    excerpt = data[:EXCERPT].decode("utf-8", "replace")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise FileRejected("invalid_utf8", f"not valid UTF-8: {exc}", excerpt) from None
    except json.JSONDecodeError as exc:
        raise FileRejected("invalid_json", f"not JSON: {exc}", excerpt) from None
    if isinstance(doc, list):
        doc = {"turns": doc}
    if not isinstance(doc, dict):
        raise FileRejected("invalid_json", "expected an object or a list of turns", excerpt)
    try:
        turns = _turns(doc.get("turns"), settings)
        values = {k: _scalar(doc.get(k)) for k in FIELDS if doc.get(k) is not None}
        values.setdefault("external_interaction_id", PurePosixPath(path).stem)
        values.setdefault("channel", "chat")
        stamps = [t["at"] for t in turns if t["at"] is not None]
        if "started_at" not in values and stamps:
            values["started_at"] = min(stamps).isoformat()
        if "ended_at" not in values and stamps:
            values["ended_at"] = max(stamps).isoformat()
        record = build_conversation(values, settings)
    except _RowInvalid as bad:
        return ParsedRow(1, 1, None, bad.error, excerpt)
    record["turns"] = turns
    record["metadata"] = {
        k: _scalar(v)
        for k, v in doc.items()
        if k not in FIELDS and k != "turns" and isinstance(v, str | int | float | bool)
    }
    return ParsedRow(1, 1, record, None, excerpt)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise _RowInvalid("invalid_value", f"expected a flat value, got {type(value).__name__}")


def _turns(raw: Any, settings: ParseSettings) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _RowInvalid("invalid_value", "turns must be a list", "turns")
    turns = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _RowInvalid("invalid_value", f"turn {i} is not an object", "turns")
        speaker = str(item.get("speaker", "")).strip().lower()
        speaker = {"user": "customer", "visitor": "customer", "bot": "system"}.get(speaker, speaker)
        if speaker not in SPEAKERS:
            raise _RowInvalid("invalid_value", f"turn {i}: unknown speaker {speaker!r}", "turns")
        text = item.get("text", item.get("message"))
        if not isinstance(text, str):
            raise _RowInvalid("invalid_value", f"turn {i}: text is missing", "turns")
        at = item.get("time", item.get("at"))
        stamp = None
        if at is not None:
            try:
                stamp = parse_timestamp(str(at), settings.timezone)
            except (ValueError, OverflowError, OSError) as exc:
                raise _RowInvalid("bad_timestamp", f"turn {i}: {exc}", "turns") from None
        turns.append({"speaker": speaker, "at": stamp, "text": text})
    return turns
