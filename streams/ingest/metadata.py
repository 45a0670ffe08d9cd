"""Recording metadata files: flat key/value pairs in XML, JSON, CSV or YAML (seed 003).

Contract of :func:`read_metadata`: reads at most ``limits.max_bytes`` (+1 to tell) from the
stream, decodes it (UTF-8 with or without BOM, or UTF-16 with a BOM) and returns the fields as
an ordered ``dict[str, str]``, or raises :class:`~streams.ingest.parse.FileRejected` with one
of these reasons:

- ``too_large``: more than ``max_bytes``;
- ``unsafe_xml``: a DTD, entity declaration or external reference (defusedxml refuses them, so
  an entity bomb or XXE is never expanded);
- ``unsafe_yaml``: more YAML aliases than :data:`MAX_YAML_ALIASES` (the alias bomb);
- ``nested_metadata``: a value that is itself a mapping or a list (seed 003: no nested fields);
- ``too_many_fields``: more than ``max_fields`` fields;
- ``invalid_metadata``: anything else (syntax, encoding, not a mapping, duplicate or empty
  keys, a CSV that is not one header and one row, control characters, over-long keys/values).

Shapes accepted: JSON and YAML, one mapping of scalars (numbers and booleans become their text,
null the empty string); XML, a root element whose children are leaf elements (``<disposition>
sale</disposition>``, or ``<field name="disposition">sale</field>``); CSV, one header line and
one row (comma, semicolon or tab). Pure and bounded; call it from a worker thread.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
from typing import Any, BinaryIO

import yaml
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from pydantic import BaseModel, ConfigDict, Field

from streams.ingest.parse import FileRejected

METADATA_SUFFIXES = frozenset((".xml", ".json", ".csv", ".yml", ".yaml"))
#: A flat metadata file never needs many aliases; an alias bomb needs a lot.
MAX_YAML_ALIASES = 20
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class MetadataLimits(BaseModel):
    """Bounds on one metadata file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(
        262_144,
        ge=1024,
        le=50_000_000,
        description="Largest metadata file read; below kafka.message_max_bytes, since the "
        "fields travel in the call's conversation record.",
    )
    max_fields: int = Field(500, ge=1, le=100_000, description="Most fields in one file.")
    max_key_chars: int = Field(256, ge=1, le=4096, description="Longest field name.")
    max_value_chars: int = Field(65_536, ge=1, le=10_000_000, description="Longest value.")


def read_metadata(stream: BinaryIO, name: str, limits: MetadataLimits) -> dict[str, str]:
    """Read one metadata file into flat fields (see the module doc)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if f".{suffix}" not in METADATA_SUFFIXES:
        raise FileRejected(
            "unsupported_format", f"{name}: not a metadata file (xml, json, csv, yml)"
        )
    data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise FileRejected(
            "too_large",
            f"{name}: metadata larger than {limits.max_bytes} bytes (metadata.max_bytes)",
        )
    text = _decode(data, name)
    pairs: list[tuple[str, Any]]
    if suffix == "json":
        pairs = _json(text, name)
    elif suffix == "xml":
        pairs = _xml(data, name)
    elif suffix == "csv":
        pairs = _csv(text, name)
    else:
        pairs = _yaml(text, name)
    return _flatten(pairs, name, limits)


def _decode(data: bytes, name: str) -> str:
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            "invalid_metadata", f"{name}: not UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None


def _json(text: str, name: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] | None = None

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal pairs
        pairs = items
        return dict(items)

    try:
        value = json.loads(text, object_pairs_hook=hook)
    except RecursionError:
        raise FileRejected("nested_metadata", f"{name}: nested far too deep") from None
    except ValueError as exc:
        raise FileRejected("invalid_metadata", f"{name}: invalid JSON: {exc}") from None
    if not isinstance(value, dict) or pairs is None:
        raise FileRejected("invalid_metadata", f"{name}: JSON metadata must be one object")
    return pairs


def _xml(data: bytes, name: str) -> list[tuple[str, Any]]:
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise FileRejected(
            "unsafe_xml",
            f"{name}: refused {type(exc).__name__} (DTDs and entities are not allowed)",
        ) from None
    except (SafeET.ParseError, ValueError) as exc:
        raise FileRejected("invalid_metadata", f"{name}: invalid XML: {exc}") from None
    pairs: list[tuple[str, Any]] = []
    for child in root:
        key = child.get("name") or child.get("key") or _local(child.tag)
        if len(child):
            pairs.append((key, {}))  # has child elements: nested
            continue
        pairs.append((key, (child.text or "").strip()))
    if not pairs and (root.text or "").strip():
        raise FileRejected("invalid_metadata", f"{name}: XML metadata needs one element per field")
    return pairs


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _csv(text: str, name: str) -> list[tuple[str, Any]]:
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise FileRejected("invalid_metadata", f"{name}: invalid CSV: {exc}") from None
    rows = [r for r in rows if r]
    if len(rows) != 2:
        raise FileRejected(
            "invalid_metadata",
            f"{name}: CSV metadata must be one header line and one row; found {len(rows)} lines",
        )
    header, values = rows
    if len(header) != len(values):
        raise FileRejected(
            "invalid_metadata",
            f"{name}: the header has {len(header)} columns, the row {len(values)}",
        )
    return [(h.strip(), v) for h, v in zip(header, values, strict=True)]


def _yaml(text: str, name: str) -> list[tuple[str, Any]]:
    try:
        aliases = sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, yaml.SafeLoader))
        if aliases > MAX_YAML_ALIASES:
            raise FileRejected(
                "unsafe_yaml", f"{name}: {aliases} YAML aliases (at most {MAX_YAML_ALIASES})"
            )
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise FileRejected("invalid_metadata", f"{name}: invalid YAML: {exc}") from None
    except RecursionError:
        raise FileRejected("nested_metadata", f"{name}: nested far too deep") from None
    if not isinstance(value, dict):
        raise FileRejected("invalid_metadata", f"{name}: YAML metadata must be one mapping")
    return list(value.items())


def _flatten(pairs: list[tuple[Any, Any]], name: str, limits: MetadataLimits) -> dict[str, str]:
    if len(pairs) > limits.max_fields:
        raise FileRejected(
            "too_many_fields",
            f"{name}: {len(pairs)} fields (metadata.max_fields is {limits.max_fields})",
        )
    fields: dict[str, str] = {}
    for raw_key, raw_value in pairs:
        if isinstance(raw_key, (dict, list, tuple)):
            raise FileRejected("invalid_metadata", f"{name}: a field name must be text")
        key = str(raw_key).strip()
        if isinstance(raw_value, (dict, list, tuple, set)):
            raise FileRejected(
                "nested_metadata", f"{name}: field {key[:80]!r} is nested (only flat fields)"
            )
        try:
            value = _text(raw_value)
        except ValueError:  # an integer with more digits than Python prints
            raise FileRejected(
                "invalid_metadata", f"{name}: field {key!r}: number too long"
            ) from None
        if not key or len(key) > limits.max_key_chars or _CONTROL.search(key):
            raise FileRejected(
                "invalid_metadata",
                f"{name}: bad field name {key[:80]!r} (empty, too long or with control characters)",
            )
        if len(value) > limits.max_value_chars:
            raise FileRejected(
                "invalid_metadata",
                f"{name}: field {key!r} has {len(value)} characters "
                f"(metadata.max_value_chars is {limits.max_value_chars})",
            )
        if _CONTROL.search(value):
            raise FileRejected("invalid_metadata", f"{name}: field {key!r} has a control character")
        if key in fields:
            raise FileRejected("invalid_metadata", f"{name}: field {key!r} appears twice")
        fields[key] = value
    return fields


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)
