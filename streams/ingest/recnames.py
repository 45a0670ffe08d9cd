"""Recording file names: the call time, user and ids a contact centre encodes in them.

Seed 003 names recordings ``yyyyMMdd-hhmmss_uid.ext`` (call time in one consistent time zone,
the user's id), configurable to carry direction, session id and ANI/DNIS. A pattern is literal
text with ``{token}`` fields:

==================  ======================================================================
token               matches
==================  ======================================================================
``yyyyMMdd``        8 digits: the call date
``hhmmss``          6 digits: the call time (``HHmmss`` is the same); second 60 is allowed
``yyyy`` ``MM``     the date in parts (4 and 2 digits; ``dd``, ``hh``/``HH``, ``mm``, ``ss``)
``direction``       ``inbound`` ``outbound`` ``internal`` (also ``in``, ``out``, ``int``;
                    any case), normalised to the long form
``ani`` ``dnis``    a phone number: optional ``+`` then 1-20 digits
``session_id``      letters, digits and ``-``
``id``              letters, digits and ``-`` (the recording source's unique id)
``ext``             the file extension (letters and digits), only at the end
anything else       ``{uid}``, ``{source}``, custom names: any text, as short as the rest of
                    the pattern allows (so ``joe_baducci`` is one uid in
                    ``20201012-140253_joe_baducci.wav``)
==================  ======================================================================

Contract: :meth:`NamePattern.match` takes a file name (no folders) and returns a
:class:`RecordingName` or ``None`` when the name does not fit the pattern or its date is not a
real one. Matching is a full match. The call time is read in the pattern's time zone (IANA name)
and returned in UTC; a name without date and time tokens has no call time. Pure, thread-safe.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PATTERN = "{yyyyMMdd}-{hhmmss}_{uid}.{ext}"

_FIXED = {
    "yyyyMMdd": r"\d{8}",
    "hhmmss": r"\d{6}",
    "HHmmss": r"\d{6}",
    "yyyy": r"\d{4}",
    "MM": r"\d{2}",
    "dd": r"\d{2}",
    "hh": r"\d{2}",
    "HH": r"\d{2}",
    "mm": r"\d{2}",
    "ss": r"\d{2}",
    "direction": r"(?i:inbound|outbound|internal|in|out|int)",
    "ani": r"\+?\d{1,20}",
    "dnis": r"\+?\d{1,20}",
    "session_id": r"[A-Za-z0-9-]+",
    "id": r"[A-Za-z0-9-]+",
    "ext": r"[A-Za-z0-9]+",
}
_DATE_TOKENS = frozenset(
    ("yyyyMMdd", "hhmmss", "HHmmss", "yyyy", "MM", "dd", "hh", "HH", "mm", "ss")
)
_DIRECTIONS = {"in": "inbound", "out": "outbound", "int": "internal"}
_TOKEN = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


@dataclass(frozen=True, slots=True)
class RecordingName:
    """What a recording's name says."""

    stem: str
    """The name without its extension (the key its metadata file shares)."""
    ext: str
    call_time: dt.datetime | None
    """Aware, in UTC; None when the pattern has no date and time."""
    fields: dict[str, str] = field(default_factory=dict)
    """Every other token by name (``uid``, ``direction``, ``session_id``, ``ani``, ...)."""


class NamePattern:
    """A compiled recording-name pattern (see the module doc)."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, timezone: str = "UTC") -> None:
        self.pattern = pattern
        self.regex, self.tokens = _compile(pattern)
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r} (use an IANA name)") from exc
        self.has_time = bool(_DATE_TOKENS.intersection(self.tokens))

    @staticmethod
    def validate(pattern: str) -> str:
        """Return ``pattern`` if it compiles, else raise ValueError naming the problem."""
        _compile(pattern)
        return pattern

    def match(self, filename: str) -> RecordingName | None:
        """Return what ``filename`` says, or None if it does not fit (see the module doc)."""
        if "/" in filename or len(filename) > 1024:
            return None
        found = self.regex.fullmatch(filename)
        if found is None:
            return None
        values = {name: found.group(f"t{i}") for i, name in enumerate(self.tokens)}
        call_time = self._call_time(values) if self.has_time else None
        if self.has_time and call_time is None:
            return None
        ext = values.get("ext", "")
        stem = filename[: -len(ext) - 1] if ext and filename.endswith("." + ext) else filename
        fields = {k: v for k, v in values.items() if k not in _DATE_TOKENS and k != "ext"}
        if "direction" in fields:
            low = fields["direction"].lower()
            fields["direction"] = _DIRECTIONS.get(low, low)
        return RecordingName(stem=stem, ext=ext.lower(), call_time=call_time, fields=fields)

    def _call_time(self, values: dict[str, str]) -> dt.datetime | None:
        date = values.get("yyyyMMdd")
        year, month, day = (
            (date[:4], date[4:6], date[6:])
            if date
            else (values.get("yyyy"), values.get("MM"), values.get("dd"))
        )
        clock = values.get("hhmmss") or values.get("HHmmss")
        hour, minute, second = (
            (clock[:2], clock[2:4], clock[4:])
            if clock
            else (
                values.get("hh") or values.get("HH") or "0",
                values.get("mm", "0"),
                values.get("ss", "0"),
            )
        )
        if year is None or month is None or day is None:
            return None
        try:
            leap = int(second) == 60  # seed 003 allows second 60 (a leap second)
            local = dt.datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                59 if leap else int(second),
                tzinfo=self.zone,
            )
        except ValueError:
            return None
        if leap:
            local += dt.timedelta(seconds=1)
        return local.astimezone(dt.UTC)


def _compile(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    if not pattern or len(pattern) > 512:
        raise ValueError("a name pattern must have 1 to 512 characters")
    parts: list[str] = []
    tokens: list[str] = []
    pos = 0
    for found in _TOKEN.finditer(pattern):
        parts.append(_literal(pattern[pos : found.start()]))
        name = found.group(1)
        if not _NAME.match(name):
            raise ValueError(f"bad token {{{name}}} in name pattern {pattern!r}")
        if name in tokens:
            raise ValueError(f"token {{{name}}} appears twice in name pattern {pattern!r}")
        if name == "ext" and found.end() != len(pattern):
            raise ValueError(f"{{ext}} must end the name pattern {pattern!r}")
        parts.append(f"(?P<t{len(tokens)}>{_FIXED.get(name, r'[^/]+?')})")
        tokens.append(name)
        pos = found.end()
    parts.append(_literal(pattern[pos:]))
    if not tokens:
        raise ValueError(f"name pattern {pattern!r} has no {{token}}")
    if "yyyyMMdd" in tokens and {"yyyy", "MM", "dd"} & set(tokens):
        raise ValueError(f"name pattern {pattern!r} gives the date twice")
    has_date = "yyyyMMdd" in tokens or "yyyy" in tokens
    if not has_date and _DATE_TOKENS.intersection(tokens):
        raise ValueError(f"name pattern {pattern!r} has a time of day but no date")
    split = {"yyyy", "MM", "dd"} & set(tokens)
    if split and split != {"yyyy", "MM", "dd"}:
        raise ValueError(f"name pattern {pattern!r} needs all of {{yyyy}}, {{MM}} and {{dd}}")
    return re.compile("".join(parts), re.DOTALL), tuple(tokens)


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"unbalanced brace in name pattern text {text!r}")
    return re.escape(text)
