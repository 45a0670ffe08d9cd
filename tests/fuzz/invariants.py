"""What must hold for any input, checked by the fuzz harnesses and by the regression tests.

Each ``check_*`` function takes the raw bytes of one input and returns normally when every
property holds. It raises :class:`InvariantBroken` when an output breaks a property, and lets any
exception the code under test should not raise escape as it is: both are findings. The same
functions replay the saved findings in ``tests/fuzz/crashes/`` (``<target>-<short name>``, the
raw input) from ``tests/unit/streams/test_fuzz_regressions.py``.

This module must not import atheris: the unit tests import it.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import String

from connectors.errors import UnsafePath
from connectors.paths import is_safe_name, join, normalize
from streams.cases.store import cases
from streams.codec import AvroCodec
from streams.ingest.metadata import MetadataLimits, read_metadata
from streams.ingest.parse import FileRejected, ParsedRow, ParseSettings, parse

REPO = Path(__file__).resolve().parents[2]
CRASHES = Path(__file__).resolve().parent / "crashes"

#: A reason code: short lower_snake_case, bounded for metric labels and dead letters.
REASON = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
MAX_REASON = 32
#: C0 controls other than tab, LF and CR: refused per row (issue 6, text hygiene).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: An accepted id must fit the case store's column (a longer one fails the whole batch).
MAX_EXTERNAL_ID = cast(String, cases.c.external_interaction_id.type).length or 0
#: Small limits, so that short inputs reach the size checks (CSV and chat).
SETTINGS = ParseSettings(max_field_bytes=1024, max_document_bytes=64 * 1024)
#: TSV goes through the other code paths: a column mapping and a local zone.
MAPPED = ParseSettings(
    source_system="five9",
    mapping={"external_interaction_id": "CallID", "started_at": "Call Start"},
    timezone="America/New_York",
    max_field_bytes=1024,
)
ANNOUNCED = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
#: Store roots ``join`` is checked against: none, the file-system root, absolute, relative.
ROOTS = ("", "/", "/srv/inbox", "/srv/inbox/", "data/in")

_codec: AvroCodec | None = None


class InvariantBroken(AssertionError):
    """An output breaks a property; ``code`` names the property (bounded)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _avro() -> AvroCodec:
    global _codec
    if _codec is None:
        _codec = AvroCodec()
    return _codec


def _reason_ok(reason: object) -> bool:
    return isinstance(reason, str) and len(reason) <= MAX_REASON and bool(REASON.fullmatch(reason))


def _strings(value: Any) -> list[str]:
    """Every string in a conversation: values, map keys, turn texts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check_conversation(row: ParsedRow, path: str, settings: ParseSettings) -> None:
    """An accepted conversation is clean text, fits the case store and encodes as files.py does."""
    conv = row.conversation
    if conv is None:
        return
    bad = next((s for s in _strings(conv) if CONTROL.search(s)), None)
    if bad is not None:
        raise InvariantBroken("control_character_accepted", f"row {row.row}: {bad[:80]!r}")
    ext = conv.get("external_interaction_id")
    if isinstance(ext, str) and len(ext) > MAX_EXTERNAL_ID:
        raise InvariantBroken(
            "id_too_long_accepted", f"row {row.row}: id of {len(ext)} > {MAX_EXTERNAL_ID} chars"
        )
    record = {
        **conv,
        "tenant": "fuzz",
        "source_system": settings.source_system,
        "source": {
            "file_id": "0" * 32,
            "connector": "fuzz",
            "path": path,
            "row": row.row,
            "announced_at": ANNOUNCED,
        },
    }
    try:
        _avro().encode("callstream.Conversation", record)
    except Exception as exc:  # any failure to encode an accepted row is the finding
        raise InvariantBroken("encode_failed", f"row {row.row}: {exc}") from exc


def check_parse(data: bytes, path: str, settings: ParseSettings = SETTINGS) -> None:
    """Parse ``data`` as the file ``path`` to the end and check every row (see module doc)."""
    previous = 0
    try:
        for row in parse(io.BytesIO(data), path, settings):
            if not isinstance(row, ParsedRow):
                raise InvariantBroken("not_a_row", repr(row)[:80])
            if (row.conversation is None) == (row.error is None):
                raise InvariantBroken("row_not_either", f"row {row.row}: conversation and error")
            if row.error is not None and not _reason_ok(row.error.reason):
                raise InvariantBroken("unbounded_reason", repr(row.error.reason)[:80])
            if row.row <= previous:
                raise InvariantBroken("row_order", f"row {row.row} after row {previous}")
            if row.line < 1:
                raise InvariantBroken("line_number", f"row {row.row} on line {row.line}")
            previous = row.row
            check_conversation(row, path, settings)
    except FileRejected as exc:
        if not _reason_ok(exc.reason):
            raise InvariantBroken("unbounded_reason", repr(exc.reason)[:80]) from exc


def check_paths(data: bytes) -> None:
    """Check normalize, is_safe_name and join on ``data`` read as a path (see module doc)."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        norm: str | None = normalize(text)
    except UnsafePath:
        norm = None
    if norm is not None:
        parts = norm.split("/")
        if any(p in ("", ".", "..") for p in parts) or norm.startswith("/") or "\x00" in norm:
            raise InvariantBroken("not_normal", f"{text!r} -> {norm!r}")
        if parts != [p for p in text.split("/") if p not in ("", ".")]:
            raise InvariantBroken("meaning_changed", f"{text!r} -> {norm!r}")
        if normalize(norm) != norm:
            raise InvariantBroken("not_idempotent", repr(norm))
        if not all(is_safe_name(p) for p in parts):
            raise InvariantBroken("unsafe_component", repr(norm))
    if is_safe_name(text) and normalize(text) != text:
        raise InvariantBroken("safe_name_not_normal", repr(text))
    for root in ROOTS:
        try:
            joined = join(root, text)
        except UnsafePath:
            if norm is not None:
                raise InvariantBroken("join_refuses_normal", f"{root!r} + {text!r}") from None
            continue
        if norm is None:
            raise InvariantBroken("join_accepts_unsafe", f"{root!r} + {text!r} -> {joined!r}")
        if not _strictly_below(root, joined):
            raise InvariantBroken("join_escapes", f"{root!r} + {text!r} -> {joined!r}")


def _strictly_below(root: str, joined: str) -> bool:
    """Tell whether ``joined``, resolved lexically, names something beneath ``root``."""
    resolved = posixpath.normpath(joined)
    if not root:
        return not resolved.startswith("/") and resolved != "." and resolved.split("/")[0] != ".."
    base = posixpath.normpath(root)
    return resolved != base and resolved.startswith(base.rstrip("/") + "/")


METADATA_LIMITS = MetadataLimits(max_bytes=64 * 1024, max_fields=50, max_value_chars=4096)
METADATA_KINDS = ("xml", "json", "csv", "yml")
METADATA_REASONS = frozenset(
    (
        "too_large",
        "unsafe_xml",
        "unsafe_yaml",
        "nested_metadata",
        "too_many_fields",
        "invalid_metadata",
    )
)


def check_metadata(data: bytes) -> None:
    """Read ``data[1:]`` as a metadata file (``data[0]`` picks the format): only
    ``FileRejected`` with a metadata reason may escape; accepted fields are flat text within the
    limits, with no control characters."""
    kind = METADATA_KINDS[data[0] % len(METADATA_KINDS)] if data else "json"
    try:
        fields = read_metadata(io.BytesIO(data[1:]), f"m.{kind}", METADATA_LIMITS)
    except FileRejected as exc:
        if exc.reason not in METADATA_REASONS:
            raise InvariantBroken("unknown_reason", f"{kind}: {exc.reason!r}") from None
        return
    if len(fields) > METADATA_LIMITS.max_fields:
        raise InvariantBroken("too_many_fields", f"{kind}: {len(fields)}")
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvariantBroken("not_flat_text", f"{kind}: {key!r}: {value!r}"[:200])
        if CONTROL.search(key) or CONTROL.search(value):
            raise InvariantBroken("control_character", f"{kind}: {key!r}"[:200])
        if len(key) > METADATA_LIMITS.max_key_chars or len(value) > METADATA_LIMITS.max_value_chars:
            raise InvariantBroken("over_limit", f"{kind}: {key!r}"[:200])


TARGETS: dict[str, Callable[[bytes], None]] = {
    "metadata": check_metadata,
    "csv": lambda data: check_parse(data, "x.csv"),
    "tsv": lambda data: check_parse(data, "x.tsv", MAPPED),
    "chat": lambda data: check_parse(data, "x.json"),
    "paths": check_paths,
}


def signature(exc: BaseException) -> str:
    """A short label that tells findings apart: the property, or where the exception came from."""
    if isinstance(exc, InvariantBroken):
        cause = exc.__cause__
        while cause is not None and cause.__cause__ is not None:
            cause = cause.__cause__
        return f"InvariantBroken:{exc.code}" + (f":{type(cause).__name__}" if cause else "")
    ours = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve().is_relative_to(REPO)
        and not Path(frame.filename).resolve().is_relative_to(REPO / "tests")
    ]
    where = f"{Path(ours[-1].filename).name}:{ours[-1].name}" if ours else "outside"
    return f"{type(exc).__name__}:{where}"


def saved_crashes(target: str | None = None) -> list[Path]:
    """The saved findings, optionally of one target, by name."""
    prefix = f"{target}-" if target else ""
    return sorted(p for p in CRASHES.glob(f"{prefix}*") if p.is_file())


def target_of(crash: Path) -> str:
    """The target a saved finding belongs to (the part of its name before the first '-')."""
    return crash.name.split("-", 1)[0]
