"""Template filters: times, statuses as text plus a colour class, masks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2

_TONE = {
    # execution statuses (seed 001 §6.4.6)
    "success": "ok",
    "partial_success": "warn",
    "handler_failed": "bad",
    "delivery_failed": "bad",
    "pending": "muted",
    "processing": "info",
    "delivering": "info",
    # connectors, keys, jobs, tenants
    "active": "ok",
    "enabled": "ok",
    "healthy": "ok",
    "ok": "ok",  # a connector's health: its last poll succeeded
    "error": "bad",  # ... failed
    "starting": "muted",
    "polling": "info",
    "failing": "bad",
    "disabled": "muted",
    "paused": "muted",
    "revoked": "muted",
    # dead letters
    "open": "warn",
    "replayed": "ok",
    # files and probe steps
    "processed": "ok",
    "partial": "warn",
    "invalid": "bad",
    "announced": "info",
    "passed": "ok",
    "failed": "bad",
    "skipped": "muted",
}

_LABEL = {
    "partial_success": "Partial success",
    "handler_failed": "Handler failed",
    "delivery_failed": "Delivery failed",
}


def tone(status: Any) -> str:
    """The colour class of a status (the text always says it too)."""
    return _TONE.get(str(status), "muted")


def label(status: Any) -> str:
    """A status for people: ``partial_success`` → ``Partial success``."""
    text = str(status)
    return _LABEL.get(text, text.replace("_", " ").capitalize())


def when(value: Any) -> str:
    """A timestamp as ``2026-11-23 09:30:05 UTC`` ('—' when unset)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return str(value)


def day(value: Any) -> str:
    """A date as ``2026-11-23``."""
    text = when(value)
    return text[:10] if text != "—" else text


def register(env: jinja2.Environment) -> None:
    """Add the console's filters to ``env``."""
    env.filters.update(tone=tone, label=label, when=when, day=day)
