"""Files of a tenant's source types (seed 002): where they go, and what their rows become.

**Names.** A file of source type ``T`` for date ``D`` is ``sources/T/D_T.csv`` (or ``.tsv``;
the extension in any case) under the connector's root, ``D`` a real calendar date written
``YYYYMMDD``. :func:`source_file` reads that; any other file under ``sources/`` (another depth,
another name or extension, an impossible date such as 20201341, a folder that disagrees with the
name) is :class:`Misplaced`: the processor records it with reason ``misplaced`` and never reads
it. So is a well-named file of a source type that has no schema.

**Rows** (:class:`SourceShape`, run by the shared CSV/TSV parser of :mod:`streams.ingest.parse`
with its limits, strict quoting and text hygiene; a byte-order mark rejects the file). The header
must hold exactly the schema's field names, in any order (otherwise the file is rejected naming
the missing and unexpected columns). Each cell is checked against its field's type; the first
bad one rejects the row as ``invalid_value`` with the message
``Invalid data type in column [<name>]: expected <Type>`` (the seed's shape). Surrounding spaces
are ignored for every type but String; an empty cell is null, except in a primary-key field
(``missing_key``). Canonical values (what records carry and hashes cover):

========  ======================================================  ==========================
Type      accepted                                                canonical
========  ======================================================  ==========================
String    any text                                                as written
Integer   optional sign and digits, 64-bit signed                 ``12`` (no sign, no zeros)
Decimal   optional sign, digits with one optional point, <= 38    ``-3.5`` (no exponent,
          digits; no exponent, NaN or Infinity                    no trailing zeros)
Date      ``YYYY-MM-DD``, ``YYYY/MM/DD`` or ``YYYYMMDD``          ``2020-01-25``
DateTime  ISO 8601 (or epoch seconds); no offset: the connector's ``2020-01-25T10:00:00Z``
          ``ingest.timezone``                                     (UTC)
Boolean   true/false, t/f, yes/no, y/n, 1/0 (any case)            ``true`` / ``false``
========  ======================================================  ==========================

**PII.** A ``pii`` field's canonical value is replaced by the SHA-256 hex digest of its
normalised form before the row leaves :meth:`SourceShape.build`: for String fields Unicode NFC,
surrounding whitespace stripped, lowercased (``" Ann@Example.COM"`` and ``"ann@example.com"``
hash alike); for the other types the canonical value above (``+0012`` hashes as ``12``). Empty
stays null. A cell that already holds a SHA-256 hex digest (64 hex digits: the seed asks senders
to hash sensitive data) is taken as hashed (lowercased), whatever the field's type. The primary
key is built after hashing, so a PII key is a digest too. Rejected rows never carry PII in clear
either: :meth:`SourceShape.redact` gives the raw row for the dead letter with each PII cell
replaced by its digest (so a replay hashes to the same values), or nothing when the row cannot
be lined up with the header (the file itself stays in the source's ``invalid/`` folder).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from streams.control.sources import SourceField, SourceSchema
from streams.ingest.parse import MAX_ID_CHARS, FileRejected, RowInvalid, parse_timestamp

SOURCES_FOLDER = "sources"
_NAME = re.compile(r"^(?P<date>[0-9]{8})_(?P<type>[a-z][a-z0-9_]{0,63})\.(?P<ext>(?i:csv|tsv))$")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DATE = re.compile(r"([0-9]{4})([-/]?)([0-9]{2})\2([0-9]{2})")
_BOOLEANS = {
    "true": "true",
    "t": "true",
    "yes": "true",
    "y": "true",
    "1": "true",
    "false": "false",
    "f": "false",
    "no": "false",
    "n": "false",
    "0": "false",
}
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_INT64 = 2**63
_MAX_DECIMAL_DIGITS = 38


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A well-placed source file: ``sources/<source_type>/<YYYYMMDD>_<source_type>.<fmt>``."""

    source_type: str
    date: dt.date
    file_name: str
    fmt: str  # csv | tsv


@dataclass(frozen=True, slots=True)
class Misplaced:
    """A file under ``sources/`` that breaks the naming rule; ``message`` says how."""

    message: str


def source_file(path: str, folder: str = SOURCES_FOLDER) -> SourceFile | Misplaced | None:
    """Classify a connector-relative path: None when it is not under ``folder``."""
    parts = PurePosixPath(path).parts
    if not parts or parts[0] != folder:
        return None
    rule = f"source files go in {folder}/<source_type>/<YYYYMMDD>_<source_type>.csv|tsv"
    if len(parts) != 3:
        return Misplaced(f"{path!r} is not in a source type's folder: {rule}")
    name = parts[2]
    match = _NAME.match(name)
    if match is None:
        return Misplaced(f"{name!r} does not fit the name pattern: {rule}")
    source_type, stamp = match.group("type"), match.group("date")
    if source_type != parts[1]:
        return Misplaced(f"{name!r} is a {source_type!r} file in the {parts[1]!r} folder: {rule}")
    try:
        date = dt.datetime.strptime(stamp, "%Y%m%d").date()  # noqa: DTZ007 - a date, no time
    except ValueError:
        return Misplaced(f"{name!r}: {stamp} is not a date (YYYYMMDD)")
    return SourceFile(source_type, date, name, match.group("ext").lower())


# -- values --------------------------------------------------------------------------------------


def _integer(text: str, _zone: str) -> str:
    if not _INTEGER.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(text)
    return str(value)


def _decimal(text: str, _zone: str) -> str:
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    if len(text) - ("." in text) - (text[0] in "+-") > _MAX_DECIMAL_DIGITS:  # digits only left
        raise ValueError(text)
    value = decimal.Decimal(text)
    if value.is_zero():
        return "0"
    out = format(value, "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def _date(text: str, _zone: str) -> str:
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, _sep, month, day = match.groups()
    return dt.date(int(year), int(month), int(day)).isoformat()


def _datetime(text: str, zone: str) -> str:
    try:
        stamp = parse_timestamp(text, zone)
    except (OverflowError, OSError) as exc:
        raise ValueError(text) from exc
    return stamp.isoformat().replace("+00:00", "Z")


def _boolean(text: str, _zone: str) -> str:
    return _BOOLEANS[text.lower()]  # KeyError: not a boolean


def _string(text: str, _zone: str) -> str:
    return text


CONVERTERS: dict[str, Callable[[str, str], str]] = {
    "String": _string,
    "Integer": _integer,
    "Decimal": _decimal,
    "Date": _date,
    "DateTime": _datetime,
    "Boolean": _boolean,
}


def canonical(field_type: str, text: str, zone: str = "UTC") -> str | None:
    """Return the canonical value of a cell (None when empty); ValueError when it is not one."""
    if field_type != "String":
        text = text.strip()
    if not text.strip():
        return None
    try:
        return CONVERTERS[field_type](text, zone)
    except (ValueError, KeyError, decimal.InvalidOperation) as exc:
        raise ValueError(f"not a {field_type}") from exc


def hash_pii(field_type: str, value: str) -> str:
    """Return the SHA-256 hex digest of a canonical value's normalised form (module doc)."""
    if field_type == "String":
        value = unicodedata.normalize("NFC", value).strip().lower()
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def content_hash(values: dict[str, str | None]) -> str:
    """SHA-256 of a record's non-null values: a field added to the schema and left empty
    leaves the hash, and so the record, unchanged."""
    present = {k: v for k, v in values.items() if v is not None}
    body = json.dumps(present, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def invalid_value_message(field: SourceField) -> str:
    """The seed's rejection message for a bad value."""
    return f"Invalid data type in column [{field.name}]: expected {field.type}"


class SourceShape:
    """Rows of a source file as records (``key``, ``values``, ``hash``; see the module doc)."""

    def __init__(self, schema: SourceSchema, timezone: str = "UTC") -> None:
        self.schema = schema
        self.zone = timezone
        self._plan: list[tuple[SourceField, int]] = []
        self._width = 0

    def header(self, names: list[str], excerpt: str, delimiter: str) -> None:
        """Require exactly the schema's field names (any order)."""
        wanted = [f.name for f in self.schema.fields]
        missing = [n for n in wanted if n not in names]
        extra = [n or "(empty)" for n in names if n not in wanted]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) [{', '.join(missing)}]")
            if extra:
                shown = ", ".join(e[:64] for e in extra[:20])
                more = f" and {len(extra) - 20} more" if len(extra) > 20 else ""
                parts.append(f"unexpected column(s) [{shown}]{more}")
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in ",;\t|"):
                hint = f" (one column only: is the delimiter {delimiter!r} right?)"
            raise FileRejected(
                "header_mismatch",
                f"the header must name the {len(wanted)} fields of the "
                f"{self.schema.source_type!r} schema (version {self.schema.version}): "
                + "; ".join(parts)
                + hint,
                excerpt,
            )
        index = {name: i for i, name in enumerate(names)}
        self._plan = [(f, index[f.name]) for f in self.schema.fields]
        self._width = len(names)

    def build(self, fields: list[str]) -> dict[str, Any]:
        """Check and convert one row; PII is hashed here, before anything else sees it."""
        values: dict[str, str | None] = {}
        for field, i in self._plan:
            if field.pii and _DIGEST.fullmatch(fields[i].strip()):
                values[field.name] = fields[i].strip().lower()  # hashed by the sender
                continue
            try:
                value = canonical(field.type, fields[i], self.zone)
            except ValueError:
                raise RowInvalid(
                    "invalid_value", invalid_value_message(field), field.name
                ) from None
            if value is None and field.primary_key:
                raise RowInvalid(
                    "missing_key", f"Missing value in key column [{field.name}]", field.name
                )
            if value is not None and field.pii:
                value = hash_pii(field.type, value)
            values[field.name] = value
        keys = [values[f.name] for f in self.schema.key_fields]
        key = str(keys[0]) if len(keys) == 1 else json.dumps(keys, ensure_ascii=False)
        if len(key) > MAX_ID_CHARS:
            raise RowInvalid(
                "id_too_long",
                f"the record key has {len(key)} characters; the limit is {MAX_ID_CHARS}",
                self.schema.key_fields[0].name,
            )
        return {"key": key, "values": values, "hash": content_hash(values)}

    def redact(self, raw: str, delimiter: str) -> str | None:
        """Return ``raw`` with every PII cell replaced by its digest (unchanged when the schema
        has no PII field); None when the row does not line up with the header."""
        if not any(f.pii for f, _i in self._plan):
            return raw
        try:
            rows = list(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter, strict=True))
        except csv.Error:
            return None
        if len(rows) != 1 or len(rows[0]) != self._width:
            return None
        cells = rows[0]
        for field, i in self._plan:
            text = cells[i]
            if not field.pii or not text.strip() or _DIGEST.fullmatch(text.strip()):
                continue
            try:
                value = canonical(field.type, text, self.zone)
            except ValueError:
                value = None
            cells[i] = (
                hash_pii(field.type, value) if value is not None else hash_pii("String", text)
            )
        end = raw[len(raw.rstrip("\r\n")) :]
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator=end).writerow(cells)
        return out.getvalue()
