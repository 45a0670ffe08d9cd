"""Parse conversation exports (CSV/TSV) and chat transcripts (JSON) into Conversation dicts.

Contract: :func:`parse` streams a binary file object and yields one :class:`ParsedRow` per data
row (CSV/TSV) or one per document (JSON). A bad row is a :class:`ParsedRow` with ``error`` set
(reason code, column, message) and never stops the rest of the file; a file that cannot be read
at all (no usable header, not JSON, too large, too deep) raises :class:`FileRejected`. No other
exception escapes for any input (fuzzed: ``tests/fuzz/``). Memory stays bounded by
``max_row_bytes`` (CSV) or ``max_document_bytes`` (JSON), whatever the file holds.

**Nothing is silently lost.** Every physical line of a CSV/TSV is accounted for: the header, a
blank line, or part of exactly one accepted or rejected row (:class:`ParseStats` counts them).
Quoting is strict. A quote that opens a field and does not close where its row should end (the
row then spans several lines and has the wrong shape, or runs past ``max_row_lines`` /
``max_row_bytes``, or to the end of the file) rejects *only the line where the field opened*
(``unbalanced_quote``, with that line number); the lines after it are read again as rows of
their own. A last line with no line terminator whose row is incomplete is ``truncated_row`` and
flagged ``truncated``: the file is probably still being written (the caller decides).

Every rejected row carries its raw text (``raw``; or ``raw_spool``, a temporary file, for a line
too long to hold), so it can be fixed and replayed. Text hygiene: NUL and the other C0 control
characters except tab, CR and LF are rejected per row (``control_character``), as are invalid
UTF-8 (``invalid_utf8``) and ids longer than the case store's column (``id_too_long``).

CSV/TSV: a header row is required; UTF-8 with or without BOM, or UTF-16/32 with a BOM; CRLF, LF
or CR line ends; quoted fields may hold newlines. Columns map to Conversation fields through the
connector's ``mapping`` (field -> column) or the built-in aliases; every other non-empty column
goes to ``metadata`` (a column without a name as ``column_<n>``).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import operator
import re
import tempfile
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, BinaryIO, Literal, Protocol, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.clock import known_zone
from streams.media import MEDIA_SUFFIXES

CHANNELS = ("voice", "chat", "email", "social")
DIRECTIONS = ("inbound", "outbound", "internal")
SPEAKERS = ("agent", "customer", "system")
EXCERPT = 512
#: Longest external interaction id: the case store's column (``cases.external_interaction_id``).
MAX_ID_CHARS = 512

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
#: Fields taken as they are (stripped; empty is null) by :func:`build_conversation`.
_PLAIN_FIELDS = tuple(
    f
    for f in FIELDS
    if f not in ("external_interaction_id", "channel", "direction", "started_at", "ended_at")
)

#: C0 controls other than tab, LF and CR, and surrogates: invalid UTF-8 bytes (surrogateescape)
#: or lone surrogates from JSON escapes, which no UTF-8 encoder accepts.
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_LINE_ENDS = ("\n", "\r")
_EPOCH_SECONDS = re.compile(r"\d{9,11}(\.\d{1,9})?")


class ParseSettings(BaseModel):
    """How one connector's files are read (connector setting ``ingest``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_system: str = Field(
        "default",
        min_length=1,
        max_length=128,
        description="Platform the files come from; part of the case key.",
    )
    format: Literal["auto", "csv", "tsv", "chat_json"] = Field(
        "auto", description="auto: by extension (.csv, .tsv/.tab, .json)."
    )
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="CSV delimiter (default ',' / TAB for TSV)."
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Conversation field -> source column, e.g. {external_interaction_id: CallID}.",
    )
    default_channel: Literal["voice", "chat", "email", "social"] = Field(
        "voice", description="Channel of rows that do not name one."
    )
    timezone: str = Field("UTC", description="Zone of timestamps written without an offset.")
    max_field_bytes: int = Field(
        500_000, ge=1024, description="Longest accepted CSV field (characters)."
    )
    max_row_bytes: int = Field(
        900_000,
        ge=1024,
        description="Longest accepted CSV row, all its lines together; must stay below "
        "kafka.message_max_bytes so every accepted row fits one record.",
    )
    max_row_lines: int = Field(
        100,
        ge=1,
        description="Most physical lines one row may span (quoted newlines); past it an "
        "opening quote is taken as unbalanced.",
    )
    max_columns: int = Field(10_000, ge=1, description="Most columns a header may have.")
    max_document_bytes: int = Field(
        900_000,
        ge=1024,
        description="Largest JSON transcript; must stay below kafka.message_max_bytes.",
    )
    max_turns: int = Field(10_000, ge=1, description="Most turns one transcript may have.")
    sources_folder: str | None = Field(
        "sources",
        min_length=1,
        max_length=100,
        pattern=r"^[^/\x00-\x1f]+$",
        description="Top folder of source-type files (seed 002: sources/<type>/<YYYYMMDD>_<type>"
        ".csv|tsv, read against the tenant's source schemas; anything else under it is "
        "'misplaced'). null: no source files, every file is read as conversations.",
    )

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
        return known_zone(value)

    @field_validator("delimiter")
    @classmethod
    def _usable_delimiter(cls, value: str | None) -> str | None:
        if value is not None and value in '"\r\n':
            raise ValueError("the delimiter cannot be a quote or a line break")
        return value

    @model_validator(mode="after")
    def _field_fits_row(self) -> Self:
        if self.max_field_bytes > self.max_row_bytes:
            raise ValueError("max_field_bytes cannot exceed max_row_bytes")
        return self


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row was rejected (``reason`` is a bounded code)."""

    reason: str
    message: str
    column: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One data row: a Conversation dict (without tenant and source) or an error.

    ``line``/``end_line`` are the physical lines it was read from; ``raw`` its text as read
    (line ends included); ``raw_spool`` replaces ``raw`` for a line too long to keep in memory
    (a temporary file positioned at 0, UTF-8, invalid bytes preserved; the caller closes it).
    """

    row: int
    line: int
    conversation: dict[str, Any] | None
    error: RowError | None
    excerpt: str
    raw: str = ""
    end_line: int = 0
    truncated: bool = False
    raw_spool: IO[bytes] | None = None


@dataclass(slots=True)
class ParseStats:
    """How the physical lines of a delimited file were spent (filled while parsing)."""

    lines_read: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    header_raw: str = ""
    """The header's text as read (line end included): a dead row is replayed under it."""


class FileRejected(Exception):
    """The file as a whole cannot be read; ``reason`` is a bounded code."""

    def __init__(self, reason: str, message: str, excerpt: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.excerpt = excerpt


class RowInvalid(Exception):
    """One row or document breaks a rule; ``error`` names the reason code and the field."""

    def __init__(self, reason: str, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.error = RowError(reason, message, column)


class RowShape(Protocol):
    """What the rows of a delimited file become (Conversations by default).

    The parser checks everything about text and shape (encoding, quoting, control characters,
    sizes, duplicate or too many header columns, the column count of each row); the shape
    checks the header's names once and turns each well-formed row into a record.
    """

    def header(self, names: list[str], excerpt: str, delimiter: str) -> None:
        """Check the header's (stripped) column names; raise FileRejected to refuse the file."""
        ...

    def build(self, fields: list[str]) -> dict[str, Any]:
        """Return the record of one row (``len(fields)`` is the header's); raise RowInvalid."""
        ...


def detect_format(path: str, settings: ParseSettings) -> str:
    """Return csv, tsv, chat_json or media for a file, or raise FileRejected."""
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


def parse(
    stream: BinaryIO, path: str, settings: ParseSettings, stats: ParseStats | None = None
) -> Iterator[ParsedRow]:
    """Yield every row of ``stream`` (see the module doc); ``stats`` counts its lines."""
    fmt = detect_format(path, settings)
    if fmt == "media":
        raise ValueError("media files are stored, not parsed")
    if fmt == "chat_json":
        yield _parse_chat(stream, path, settings)
    else:
        delimiter = settings.delimiter or ("\t" if fmt == "tsv" else ",")
        yield from _parse_delimited(stream, delimiter, settings, stats or ParseStats())


def parse_delimited(
    stream: BinaryIO,
    delimiter: str,
    settings: ParseSettings,
    shape: RowShape,
    stats: ParseStats | None = None,
    *,
    allow_bom: bool = True,
) -> Iterator[ParsedRow]:
    """Yield every row of a CSV/TSV ``stream`` as ``shape`` builds it (see the module doc).

    ``ParsedRow.conversation`` then holds the shape's record. ``allow_bom=False`` rejects a
    file that starts with a byte-order mark (``bom_not_allowed``).
    """
    yield from _parse_delimited(
        stream, delimiter, settings, stats or ParseStats(), shape, allow_bom=allow_bom
    )


# -- values --------------------------------------------------------------------------------------


def parse_timestamp(value: str, zone: str) -> dt.datetime:
    """Parse ISO 8601 (or epoch seconds) into an aware datetime; naive ones get ``zone``."""
    text = value.strip()
    if _EPOCH_SECONDS.fullmatch(text):
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    if len(text) > 64:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:40]!r}...")
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:40]!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=ZoneInfo(zone))
    return stamp if stamp.tzinfo is dt.UTC else stamp.astimezone(dt.UTC)


def _clean(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bad_text_error(value: str, column: str | None) -> RowInvalid:
    bad = _BAD_TEXT.search(value)
    assert bad is not None  # noqa: S101 - only called after a match
    ch = bad.group()
    if "\ud800" <= ch <= "\udfff":
        return RowInvalid("invalid_utf8", "not valid UTF-8 (or a lone surrogate escape)", column)
    return RowInvalid(
        "control_character",
        f"control character U+{ord(ch):04X} at offset {bad.start()} (only tab, CR and LF "
        "are allowed in text)",
        column,
    )


def build_conversation(values: Mapping[str, str], settings: ParseSettings) -> dict[str, Any]:
    """Apply business rules to mapped string values; raise RowInvalid naming the column."""
    ext = (values.get("external_interaction_id") or "").strip()
    if not ext:
        raise RowInvalid(
            "missing_id", "external interaction id is empty", "external_interaction_id"
        )
    if len(ext) > MAX_ID_CHARS:
        raise RowInvalid(
            "id_too_long",
            f"external interaction id has {len(ext)} characters; the limit is {MAX_ID_CHARS}",
            "external_interaction_id",
        )
    channel = (values.get("channel") or settings.default_channel).strip().lower()
    if channel not in CHANNELS:
        raise RowInvalid("invalid_value", f"unknown channel {channel[:40]!r}", "channel")
    direction = (values.get("direction") or "").strip().lower() or None
    if direction is not None and direction not in DIRECTIONS:
        raise RowInvalid("invalid_value", f"unknown direction {direction[:40]!r}", "direction")
    stamps: dict[str, dt.datetime | None] = {}
    for name in ("started_at", "ended_at"):
        raw = (values.get(name) or "").strip()
        if not raw:
            stamps[name] = None
            continue
        try:
            stamps[name] = parse_timestamp(raw, settings.timezone)
        except (ValueError, OverflowError, OSError) as exc:
            raise RowInvalid("bad_timestamp", str(exc), name) from None
    started, ended = stamps["started_at"], stamps["ended_at"]
    if started is None:
        raise RowInvalid("bad_timestamp", "start time is empty", "started_at")
    if ended is not None and ended < started:
        raise RowInvalid(
            "end_before_start", f"ends {ended.isoformat()} before it starts", "ended_at"
        )
    record: dict[str, Any] = {
        "external_interaction_id": ext,
        "channel": channel,
        "direction": direction,
        "started_at": started,
        "ended_at": ended,
    }
    for name in _PLAIN_FIELDS:
        given = values.get(name)
        record[name] = (given.strip() or None) if given else None
    return record


# -- CSV / TSV -----------------------------------------------------------------------------------


class _LineTooLong(Exception):
    """A physical line longer than the row limit; its text was drained into ``spool``."""

    def __init__(self, spool: IO[bytes], size: int) -> None:
        super().__init__(f"a line of {size} characters")
        self.spool = spool
        self.size = size


class _RowOverrun(Exception):
    """The row being read spans more lines or characters than allowed."""


class _Lines:
    """Physical lines for ``csv.reader``: numbered, bounded, and re-readable.

    :meth:`begin` starts a row; :attr:`record` then holds the ``(line number, text)`` pairs the
    reader consumed for it. :meth:`reread` puts lines back to be read again as new rows (after
    an unbalanced quote swallowed them). A line longer than ``max_chars`` is never held whole:
    it is drained into a temporary file and :class:`_LineTooLong` raised.
    """

    def __init__(self, text: io.TextIOBase, max_chars: int, max_lines: int) -> None:
        self._text = text
        self._max_chars = max_chars
        self._max_lines = max_lines
        self._again: deque[tuple[int, str]] = deque()
        self.record: list[tuple[int, str]] = []
        self._chars = 0
        self.lines_read = 0

    def __iter__(self) -> Self:
        return self

    def begin(self) -> None:
        self.record = []
        self._chars = 0

    def reread(self, lines: list[tuple[int, str]]) -> None:
        self._again.extendleft(reversed(lines))

    def __next__(self) -> str:
        if self.record and (len(self.record) >= self._max_lines or self._chars > self._max_chars):
            raise _RowOverrun(
                f"the row runs past {self._max_lines} lines or {self._max_chars} characters"
            )
        if self._again:
            item = self._again.popleft()
        else:
            line = self._text.readline(self._max_chars + 1)
            if not line:
                raise StopIteration
            self.lines_read += 1
            if len(line) > self._max_chars and not line.endswith(_LINE_ENDS):
                self._drain(line)
            item = (self.lines_read, line)
        self.record.append(item)
        self._chars += len(item[1])
        return item[1]

    def _drain(self, head: str) -> None:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
        for _no, text in self.record:
            spool.write(text.encode("utf-8", "surrogateescape"))
        size = len(head)
        spool.write(head.encode("utf-8", "surrogateescape"))
        while not head.endswith(_LINE_ENDS):
            head = self._text.readline(1024 * 1024)
            if not head:
                break
            size += len(head)
            spool.write(head.encode("utf-8", "surrogateescape"))
        spool.seek(0)
        self.record.append((self.lines_read, ""))
        raise _LineTooLong(spool, size)


def _open_text(stream: BinaryIO, allow_bom: bool = True) -> io.TextIOWrapper:
    """Wrap ``stream`` as text: UTF-8 (BOM optional), or UTF-16/32 when a BOM says so."""
    head = stream.read(4)
    encoding, skip = "utf-8", 0
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if head.startswith(bom):
            encoding, skip = name, len(bom)
            break
    if skip and not allow_bom:
        raise FileRejected(
            "bom_not_allowed",
            f"the file starts with a byte-order mark ({encoding.upper()}): save it as UTF-8 "
            "without BOM",
        )
    raw = io.BufferedReader(_Prefixed(head[skip:], stream), buffer_size=256 * 1024)
    errors = "surrogateescape" if encoding == "utf-8" else "replace"
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="")


def _header(
    reader: Any, lines: _Lines, delimiter: str, settings: ParseSettings, shape: RowShape
) -> list[str]:
    lines.begin()
    try:
        header = next(reader)
    except StopIteration:
        raise FileRejected("missing_header", "the file is empty") from None
    except _LineTooLong as exc:
        exc.spool.close()
        raise FileRejected(
            "missing_header", f"the first line is longer than {settings.max_row_bytes} characters"
        ) from None
    except (csv.Error, _RowOverrun) as exc:
        detail = str(exc) or "an unbalanced quote"
        raise FileRejected("missing_header", f"unreadable header (line 1): {detail}") from None
    if header and header[0].startswith("\ufeff"):  # a second BOM, or one inside UTF-16
        header[0] = header[0][1:]
    header_text = delimiter.join(header)
    excerpt = _clean(header_text[:EXCERPT])
    if "\x00" in header_text:
        raise FileRejected(
            "unsupported_encoding",
            "the header holds NUL characters: UTF-16/32 without a byte-order mark? Save the "
            "export as UTF-8",
            excerpt,
        )
    if _BAD_TEXT.search(header_text):
        bad = _bad_text_error(header_text, None).error
        raise FileRejected(bad.reason, f"header: {bad.message}", excerpt)
    if len(header) > settings.max_columns:
        raise FileRejected(
            "too_many_columns",
            f"the header has {len(header)} columns; the limit is {settings.max_columns}",
            excerpt,
        )
    names = [h.strip() for h in header]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    dupes = sorted(n for n, k in counts.items() if n and k > 1)
    if dupes:
        shown = ", ".join(repr(d[:40]) for d in dupes[:5])
        raise FileRejected("duplicate_header", f"the header repeats column(s) {shown}", excerpt)
    shape.header(names, excerpt, delimiter)
    return names


class ConversationShape:
    """Rows as Conversations: columns mapped by ``settings.mapping`` or the aliases, every
    other non-empty column into ``metadata``."""

    def __init__(self, settings: ParseSettings) -> None:
        self.settings = settings
        self.columns: dict[str, int] = {}
        self.extra: list[tuple[int, str]] = []
        self._names: tuple[str, ...] = ()
        self._pick: Callable[[list[str]], tuple[str, ...]] = lambda _fields: ()

    def header(self, names: list[str], excerpt: str, delimiter: str) -> None:
        """Find the Conversation columns; the external interaction id is required."""
        columns = _resolve_columns(names, self.settings)
        if "external_interaction_id" not in columns:
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in ",;\t|"):
                hint = f" (one column only: is the delimiter {delimiter!r} right?)"
            wanted = self.settings.mapping.get("external_interaction_id", "external_interaction_id")
            raise FileRejected("missing_header", f"header has no {wanted!r} column{hint}", excerpt)
        mapped = set(columns.values())
        self.columns = columns
        self._names = tuple(columns)
        indexes = tuple(columns.values())
        self._pick = (
            operator.itemgetter(*indexes)
            if len(indexes) > 1
            else lambda fields: (fields[indexes[0]],)
        )
        self.extra = [
            (i, names[i] or f"column_{i + 1}") for i in range(len(names)) if i not in mapped
        ]

    def build(self, fields: list[str]) -> dict[str, Any]:
        """Build the row's Conversation (without tenant and source)."""
        values = dict(zip(self._names, self._pick(fields), strict=True))
        record = build_conversation(values, self.settings)
        record["turns"] = []
        record["metadata"] = {name: fields[i] for i, name in self.extra if fields[i] != ""}
        return record


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
    stream: BinaryIO,
    delimiter: str,
    settings: ParseSettings,
    stats: ParseStats,
    shape: RowShape | None = None,
    *,
    allow_bom: bool = True,
) -> Iterator[ParsedRow]:
    shape = shape or ConversationShape(settings)
    lines = _Lines(_open_text(stream, allow_bom), settings.max_row_bytes, settings.max_row_lines)
    csv.field_size_limit(settings.max_field_bytes)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        names = _header(reader, lines, delimiter, settings, shape)
    finally:
        stats.lines_read = lines.lines_read
    stats.header_lines = len(lines.record)
    stats.header_raw = "".join(text for _no, text in lines.record)
    width = len(names)
    row_no = 0
    while True:
        lines.begin()
        fields: list[str] | None = None
        error: RowError | None = None
        spool: IO[bytes] | None = None
        try:
            fields = next(reader)
        except StopIteration:
            break
        except _LineTooLong as exc:
            spool = exc.spool
            error = RowError(
                "row_too_large",
                f"{exc} exceeds the row limit of {settings.max_row_bytes} characters",
            )
        except _RowOverrun as exc:
            error = RowError("unbalanced_quote", f"a quoted field is not closed: {exc}")
        except csv.Error as exc:
            reason = "field_too_large" if "field limit" in str(exc) else "malformed_row"
            error = RowError(reason, str(exc))
        finally:
            stats.lines_read = lines.lines_read
        record = lines.record
        if fields is not None and not fields and len(record) == 1:
            stats.blank_lines += 1
            continue
        first, last = record[0][0], record[-1][0]
        raw = record[0][1] if len(record) == 1 else "".join(text for _no, text in record)
        truncated = not record[-1][1].endswith(_LINE_ENDS) and spool is None
        shaped = error is None and fields is not None and len(fields) == width
        if len(record) > 1 and not shaped and not truncated and spool is None:
            # A quote opened on `first` swallowed the lines after it: reject that line alone
            # and read the others again as rows of their own.
            lines.reread(record[1:])
            row_no += 1
            text = record[0][1]
            yield ParsedRow(
                row_no,
                first,
                None,
                RowError(
                    "unbalanced_quote",
                    f"a quoted field opened on line {first} is not closed where its row ends; "
                    f"the {len(record) - 1} line(s) after it are read again as rows",
                ),
                _clean(text[:EXCERPT]),
                text,
                first,
            )
            continue
        row_no += 1
        excerpt = _clean(raw[:EXCERPT])
        if error is None:
            assert fields is not None  # noqa: S101 - no error means the reader returned a row
            try:
                yield ParsedRow(
                    row_no,
                    first,
                    _record(fields, width, truncated, names, raw, settings, shape),
                    None,
                    excerpt,
                    raw,
                    last,
                )
                continue
            except RowInvalid as bad:
                error = bad.error
        elif truncated:
            error = RowError("truncated_row", f"the last line ends inside a field: {error.message}")
        yield ParsedRow(
            row_no,
            first,
            None,
            error,
            excerpt,
            "" if spool is not None else raw,
            last,
            truncated and error.reason == "truncated_row",
            spool,
        )


def _record(
    fields: list[str],
    width: int,
    truncated: bool,
    names: list[str],
    raw: str,
    settings: ParseSettings,
    shape: RowShape,
) -> dict[str, Any]:
    if len(fields) != width:
        if truncated and len(fields) < width:
            raise RowInvalid(
                "truncated_row",
                f"the last line has no line end and only {len(fields)} of {width} columns",
            )
        raise RowInvalid("wrong_column_count", f"{len(fields)} columns, header has {width}")
    if len(raw) > settings.max_row_bytes:
        raise RowInvalid(
            "row_too_large",
            f"the row has {len(raw)} characters; the limit is {settings.max_row_bytes}",
        )
    if _BAD_TEXT.search(raw):
        for i, value in enumerate(fields):
            if _BAD_TEXT.search(value):
                raise _bad_text_error(value, names[i] or f"column_{i + 1}")
    return shape.build(fields)


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


def _decode_json(data: bytes) -> Any:
    """Decode a JSON document (UTF-8/16/32, BOM optional) or raise FileRejected."""
    excerpt = data[:EXCERPT].decode("utf-8", "replace")
    try:
        text = data.decode(json.detect_encoding(data)).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise FileRejected("invalid_utf8", f"not valid UTF-8: {exc}", excerpt) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise FileRejected("nesting_too_deep", "JSON nested too deep", excerpt) from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python allows
        raise FileRejected("invalid_json", f"not JSON: {exc}", excerpt) from None


def _parse_chat(stream: BinaryIO, path: str, settings: ParseSettings) -> ParsedRow:
    data = stream.read(settings.max_document_bytes + 1)
    if len(data) > settings.max_document_bytes:
        raise FileRejected("too_large", f"transcript exceeds {settings.max_document_bytes} bytes")
    excerpt = data[:EXCERPT].decode("utf-8", "replace")
    raw = data.decode("utf-8", "surrogateescape")
    doc = _decode_json(data)
    if isinstance(doc, list):
        doc = {"turns": doc}
    if not isinstance(doc, dict):
        raise FileRejected("invalid_json", "expected an object or a list of turns", excerpt)
    try:
        record = document_conversation(doc, settings, default_id=PurePosixPath(path).stem)
    except RowInvalid as bad:
        return ParsedRow(1, 1, None, bad.error, excerpt, raw, 1)
    return ParsedRow(1, 1, record, None, excerpt, raw, 1)


def document_conversation(
    doc: Mapping[str, Any],
    settings: ParseSettings,
    *,
    default_id: str | None = None,
    default_channel: str = "chat",
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate one JSON conversation document into a Conversation dict (no tenant, source).

    The one set of rules for chat transcript files and items of the ingest API: text hygiene
    over every key and string, flat field values, turns, then :func:`build_conversation`.
    Raises :class:`RowInvalid` naming the field. ``metadata`` given: it is the record's
    metadata; otherwise every other non-null key of ``doc`` is (JSON-encoded unless a string).
    """
    _check_text(doc)
    turns = _turns(doc.get("turns"), settings)
    values = {k: _scalar(doc.get(k), k) for k in FIELDS if doc.get(k) is not None}
    if default_id is not None:
        values.setdefault("external_interaction_id", default_id)
    values.setdefault("channel", default_channel)
    stamps = [t["at"] for t in turns if t["at"] is not None]
    if "started_at" not in values and stamps:
        values["started_at"] = min(stamps).isoformat()
    if "ended_at" not in values and stamps:
        values["ended_at"] = max(stamps).isoformat()
    record = build_conversation(values, settings)
    record["turns"] = turns
    if metadata is not None:
        record["metadata"] = dict(metadata)
    else:
        record["metadata"] = {
            k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in doc.items()
            if k not in FIELDS and k != "turns" and v is not None
        }
    return record


def map_document(
    doc: Mapping[str, Any], settings: ParseSettings, *, skip: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """Map one flat JSON object (a platform event) to Conversation fields by the CSV rules.

    Keys are resolved as a CSV header's columns are (``settings.mapping`` field -> key, else
    the built-in aliases, case-insensitively); ``turns`` is the inline transcript; every other
    non-null key except those in ``skip`` becomes metadata (JSON-encoded unless a string).
    Returns ``(fields, metadata)`` for :func:`document_conversation`; raises
    :class:`RowInvalid` for a control character in any key or value.
    """
    _check_text(doc)
    names = [k for k in doc if k != "turns"]
    columns = _resolve_columns(names, settings)
    fields: dict[str, Any] = {name: doc[names[i]] for name, i in columns.items()}
    if "turns" in doc:
        fields["turns"] = doc["turns"]
    used = set(columns.values())
    metadata = {
        name: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for i, name in enumerate(names)
        if i not in used and name not in skip and (value := doc[name]) is not None
    }
    return fields, metadata


def _check_text(doc: Any) -> None:
    """Reject control characters in any key or string of the document (iteratively)."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD_TEXT.search(item):
                raise _bad_text_error(item, None)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _scalar(value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise RowInvalid("invalid_value", f"expected a flat value, got {type(value).__name__}", column)


def _turns(raw: Any, settings: ParseSettings) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RowInvalid("invalid_value", "turns must be a list", "turns")
    if len(raw) > settings.max_turns:
        raise RowInvalid(
            "too_many_turns", f"{len(raw)} turns; the limit is {settings.max_turns}", "turns"
        )
    turns = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RowInvalid("invalid_value", f"turn {i} is not an object", "turns")
        speaker = str(item.get("speaker", ""))[:40].strip().lower()
        speaker = {"user": "customer", "visitor": "customer", "bot": "system"}.get(speaker, speaker)
        if speaker not in SPEAKERS:
            raise RowInvalid("invalid_value", f"turn {i}: unknown speaker {speaker!r}", "turns")
        text = item.get("text", item.get("message"))
        if not isinstance(text, str):
            raise RowInvalid("invalid_value", f"turn {i}: text is missing", "turns")
        at = item.get("time", item.get("at"))
        stamp = None
        if at is not None:
            if not isinstance(at, str | int | float) or isinstance(at, bool):
                raise RowInvalid("bad_timestamp", f"turn {i}: time is not a value", "turns")
            try:
                stamp = parse_timestamp(str(at), settings.timezone)
            except (ValueError, OverflowError, OSError) as exc:
                raise RowInvalid("bad_timestamp", f"turn {i}: {exc}", "turns") from None
        turns.append({"speaker": speaker, "at": stamp, "text": text})
    return turns
