"""The entry point of a fetch by reference: mark a conversation as waiting for its recording.

Every source that hands over conversations whose recording lives elsewhere calls
:func:`request_fetch` before publishing them (the CSV/TSV path of
:mod:`streams.ingest.files` does; a platform-event connector does the same with its event's
conversation). The conversation then carries ``recording = {status: "pending", source_url}``;
when the case store applies it, it opens (or updates) the case marked pending and queues the
fetch in the same transaction (:mod:`streams.fetch.queue`); :mod:`streams.fetch.worker` fetches
it and publishes the conversation again with the stored object (``stored``) or as ``missing``
after a final failure (dead letter ``recording_fetch_failed``).
"""

from __future__ import annotations

from typing import Any

from streams.fetch.policy import is_fetchable, render_url
from streams.fetch.settings import RecordingFetchSettings

PENDING = "pending"
STORED = "stored"
MISSING = "missing"


def recording_state(status: str, source_url: str, **fields: Any) -> dict[str, Any]:
    """Return a conversation's ``recording`` value (the Avro ``RecordingFetch`` record)."""
    state: dict[str, Any] = {
        "status": status,
        "source_url": source_url,
        "media_key": None,
        "sha256": None,
        "size": None,
        "media_type": None,
        "http_status": None,
        "reason": None,
        "attempts": 0,
    }
    state.update(fields)
    return state


def source_url(conversation: dict[str, Any], settings: RecordingFetchSettings) -> str | None:
    """Return the URL to fetch the conversation's recording from, or None when it names none
    (no call id, or a ``recording_ref`` that is not an http(s) URL)."""
    if settings.call_id_url_template is not None:
        call_id = call_id_of(conversation, settings.call_id_field)
        return render_url(settings.call_id_url_template, call_id) if call_id else None
    ref = conversation.get("recording_ref")
    return str(ref).strip() if is_fetchable(ref) else None


def call_id_of(conversation: dict[str, Any], name: str) -> str | None:
    """Return the call id: the conversation field ``name``, else its metadata key ``name``."""
    value = conversation.get(name)
    if value is None and name not in conversation:
        value = (conversation.get("metadata") or {}).get(name)
    text = str(value).strip() if value is not None else ""
    return text or None


def request_fetch(
    tenant: str, conversation: dict[str, Any], settings: RecordingFetchSettings
) -> dict[str, Any]:
    """Return ``conversation`` (of ``tenant``) marked as waiting for its recording, or
    unchanged when it names no recording to fetch (see the module doc). Pure: the effect (the
    queued fetch) happens when the case store applies the returned conversation."""
    url = source_url(conversation, settings)
    if url is None:
        return conversation
    return {**conversation, "tenant": tenant, "recording": recording_state(PENDING, url)}


def waiting(conversation: dict[str, Any]) -> bool:
    """Tell whether a conversation asks for its recording to be fetched."""
    state = conversation.get("recording")
    return isinstance(state, dict) and state.get("status") == PENDING
