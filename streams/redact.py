"""Redact card numbers, e-mail addresses and phone numbers from conversation text (pure, no I/O).

Contract:

- :meth:`Redactor.redact_text` returns ``(text, counts)``: every sensitive value found is replaced
  by a typed placeholder and ``counts`` maps each kind found (``card``, ``email``, ``phone``) to
  how many were replaced. Kinds are looked for in that order, so a card number is never taken for
  a phone number and the digits of an e-mail address never for either.
- ``card``: a run of 13-19 digits, single spaces or dashes allowed between them, or a run of
  spoken digits ("four one one one, one one ..."; "zero".."nine" and "oh"), whose digits pass
  the Luhn check.
- ``email``: ``local@domain.tld``. ``phone``: what ``phonenumbers`` finds with leniency VALID
  (numbers without a country code are read in ``default_region``).
- Policy ``redact`` writes ``[CARD]``, ``[EMAIL]``, ``[PHONE]``; ``hash`` writes
  ``[CARD:<12 hex>]``, the start of an HMAC-SHA256 under the tenant's key of the normalised
  value (card digits, lower-case e-mail, E.164 phone), so one value gives one placeholder within
  a tenant and an unrelated one in another; ``keep`` changes nothing and counts nothing.
- Placeholders are never looked into, so redacting redacted text changes nothing and counts 0.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

Kind = Literal["card", "email", "phone"]
KINDS: tuple[Kind, ...] = ("card", "email", "phone")
#: HKDF purpose prefix of a tenant's hash key (``redaction:<tenant>``).
KEY_PURPOSE = "redaction"
HASH_CHARS = 12
CARD_DIGITS = range(13, 20)

PLACEHOLDER = re.compile(r"\[(?:CARD|EMAIL|PHONE)(?::[0-9a-f]{12})?\]")
_DIGIT_RUN = re.compile(r"(?<![\w])\d+(?:[ \-]\d+)*(?![\w])")
_GROUP = re.compile(r"\d+")
_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_WORD = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_SPOKEN_RUN = re.compile(rf"\b{_WORD}(?:[\s,.;\-]+{_WORD})*\b", re.IGNORECASE)
_SPOKEN_DIGIT = re.compile(rf"\b{_WORD}\b", re.IGNORECASE)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)


class RedactionSettings(BaseModel):
    """How a tenant's conversation text is protected before it is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Literal["redact", "hash", "keep"] = Field(
        "redact",
        description="redact: card numbers, e-mails and phone numbers become [CARD], [EMAIL], "
        "[PHONE]; hash: [CARD:<12 hex of a keyed HMAC>] (same value, same placeholder within "
        "the tenant); keep: text unchanged.",
    )
    default_region: str = Field(
        "US",
        description="Region (ISO 3166 alpha-2) phone numbers without a country code are read in.",
        examples=["US", "GB"],
    )

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r} (an ISO 3166 alpha-2 code, e.g. US)")
        return region


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn check (the last digit is the check digit)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_spans(
    groups: list[tuple[int, int, str]], search: bool = True
) -> Iterator[tuple[int, int, str]]:
    """Yield ``(start, end, digits)`` of the Luhn-valid 13-19 digit runs made of whole groups.

    The whole run is tried first; otherwise (``search``) the run is searched left to right for
    the longest stretch of consecutive groups that is a card number. Spoken digits are one group
    each, so they are judged as a whole run only (any 13 of 16 random digits would too often pass
    Luhn)."""
    whole = "".join(g[2] for g in groups)
    if len(whole) in CARD_DIGITS and luhn_valid(whole):
        yield groups[0][0], groups[-1][1], whole
        return
    if not search or len(groups) == 1:
        return
    i = 0
    while i < len(groups):
        found = None
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j][2]
            if len(digits) > max(CARD_DIGITS):
                break
            if len(digits) in CARD_DIGITS and luhn_valid(digits):
                found = (j, digits)
        if found is None:
            i += 1
            continue
        j, digits = found
        yield groups[i][0], groups[j][1], digits
        i = j + 1


class Redactor:
    """Redacts text under one tenant's :class:`RedactionSettings` (``key``: needed for hash)."""

    def __init__(self, settings: RedactionSettings, key: bytes | None = None) -> None:
        if settings.policy == "hash" and not key:
            raise ValueError("the hash redaction policy needs a key")
        self.settings = settings
        self._key = key or b""

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        """Return the text with every card number, e-mail and phone number replaced, and the
        count of replacements by kind (kinds with none are left out)."""
        counts: dict[str, int] = {}
        if self.settings.policy == "keep" or not text:
            return text, counts
        for kind, finder in (
            ("card", self._cards),
            ("email", self._emails),
            ("phone", self._phones),
        ):
            replace = partial(self._replace, kind=kind, finder=finder, counts=counts)
            text = _outside_placeholders(text, replace)
        return text, counts

    def _replace(
        self,
        text: str,
        kind: str,
        finder: Callable[[str], Iterator[tuple[int, int, str]]],
        counts: dict[str, int],
    ) -> str:
        out: list[str] = []
        pos = 0
        for start, end, value in finder(text):
            out.append(text[pos:start])
            out.append(self._placeholder(kind, value))
            counts[kind] = counts.get(kind, 0) + 1
            pos = end
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _placeholder(self, kind: str, value: str) -> str:
        if self.settings.policy == "hash":
            digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
            return f"[{kind.upper()}:{digest[:HASH_CHARS]}]"
        return f"[{kind.upper()}]"

    @staticmethod
    def _cards(text: str) -> Iterator[tuple[int, int, str]]:
        spans: list[tuple[int, int, str]] = []
        for run in _DIGIT_RUN.finditer(text):
            groups = [
                (run.start() + g.start(), run.start() + g.end(), g.group())
                for g in _GROUP.finditer(run.group())
            ]
            spans.extend(_card_spans(groups))
        for run in _SPOKEN_RUN.finditer(text):
            words = [
                (run.start() + w.start(), run.start() + w.end(), _WORDS[w.group().lower()])
                for w in _SPOKEN_DIGIT.finditer(run.group())
            ]
            if len(words) >= min(CARD_DIGITS):
                spans.extend(_card_spans(words, search=False))
        yield from sorted(spans)

    @staticmethod
    def _emails(text: str) -> Iterator[tuple[int, int, str]]:
        for m in _EMAIL.finditer(text):
            yield m.start(), m.end(), m.group().lower()

    def _phones(self, text: str) -> Iterator[tuple[int, int, str]]:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, self.settings.default_region, leniency=phonenumbers.Leniency.VALID
        )
        for m in matcher:
            e164 = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
            yield m.start, m.end, e164


def _outside_placeholders(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the stretches of ``text`` between placeholders."""
    parts: list[str] = []
    pos = 0
    for m in PLACEHOLDER.finditer(text):
        parts.append(fn(text[pos : m.start()]))
        parts.append(m.group())
        pos = m.end()
    parts.append(fn(text[pos:]))
    return "".join(parts)


class Redactors:
    """Each tenant's :class:`Redactor` and its hash key ``derive_key("redaction:<tenant>")`` (see
    SecretBox.derive_keys).

    A tenant's settings are, in this order: the config file's (``policies``, fixed for the life
    of the process), else those stored through the API (:meth:`use` for a change made in this
    process, applied at once; :meth:`use_stored` for the database's whole set, which the
    connector catalog reloads every ``runner.reconcile_interval_seconds`` so a change made in
    another process applies within that interval), else ``default``.

    :meth:`for_tenant` is called per record from worker threads: it reads an in-memory snapshot
    and builds a tenant's redactor once per settings change. Changes swap the snapshot whole.
    """

    def __init__(
        self,
        policies: Mapping[str, RedactionSettings],
        derive_key: Callable[[str], bytes],
        default: RedactionSettings | None = None,
    ) -> None:
        self._config = dict(policies)
        self._derive = derive_key
        self._default = default or RedactionSettings()
        # (stored settings, redactors built from this snapshot): one reference, swapped whole
        self._state: tuple[dict[str, RedactionSettings], dict[str, Redactor]] = ({}, {})
        self._lock = threading.Lock()
        self.generation = 0
        """Counts :meth:`use` calls: a reload read before one is stale (see :meth:`use_stored`)."""

    def configured(self, tenant: str) -> RedactionSettings | None:
        """Return the config file's settings of ``tenant`` (None: it is not a config tenant)."""
        return self._config.get(tenant)

    def settings_for(self, tenant: str) -> RedactionSettings:
        """Return the settings the tenant's text is redacted under now."""
        return self._resolve(tenant, self._state[0])

    def _resolve(self, tenant: str, stored: Mapping[str, RedactionSettings]) -> RedactionSettings:
        found = self._config.get(tenant)
        if found is None:
            found = stored.get(tenant, self._default)
        return found

    def for_tenant(self, tenant: str) -> Redactor:
        """Return the tenant's redactor."""
        stored, cache = self._state
        redactor = cache.get(tenant)
        if redactor is None:
            settings = self._resolve(tenant, stored)
            key = self._derive(f"{KEY_PURPOSE}:{tenant}") if settings.policy == "hash" else None
            redactor = cache[tenant] = Redactor(settings, key)
        return redactor

    def use(self, tenant: str, settings: RedactionSettings | None) -> None:
        """Apply a tenant's settings stored through the API (None: back to the default) at once
        in this process; a config-file tenant keeps its configured settings."""
        with self._lock:
            stored, cache = self._state
            stored = {t: s for t, s in stored.items() if t != tenant}
            if settings is not None:
                stored[tenant] = settings
            self._state = stored, {t: r for t, r in cache.items() if t != tenant}
            self.generation += 1

    def use_stored(self, stored: Mapping[str, RedactionSettings], generation: int) -> bool:
        """Replace the API tenants' settings by the database's whole set, read when
        :attr:`generation` was ``generation``; refused (False) when :meth:`use` ran since, as
        the set may predate that change (the next reload brings it)."""
        with self._lock:
            if generation != self.generation:
                return False
            fresh = dict(stored)
            if fresh != self._state[0]:
                _, cache = self._state
                kept = {t: r for t, r in cache.items() if self._resolve(t, fresh) == r.settings}
                self._state = fresh, kept
            return True

    def redact_conversation(self, conv: dict[str, Any]) -> None:
        """Redact every turn's text of a Conversation in place and add the counts to its
        ``redactions`` (kind -> count); a conversation redacted before gains nothing."""
        redactor = self.for_tenant(conv["tenant"])
        total: dict[str, int] = dict(conv.get("redactions") or {})
        for turn in conv.get("turns") or ():
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                continue  # not a turn: Avro validation refuses the conversation next
            turn["text"], counts = redactor.redact_text(turn["text"])
            for kind, n in counts.items():
                total[kind] = total.get(kind, 0) + n
        conv["redactions"] = total


def tenant_redactors(
    tenants: Iterable[Any], derive_keys: Callable[[str], list[bytes]]
) -> Redactors:
    """The :class:`Redactors` of the configured tenants (``TenantSettings.redaction``; other
    tenants get the default policy until settings stored through the API are applied), hash
    keys from ``SecretBox.derive_keys`` (first key)."""
    return Redactors({t.id: t.redaction for t in tenants}, lambda purpose: derive_keys(purpose)[0])
