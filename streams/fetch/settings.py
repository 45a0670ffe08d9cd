"""Connector setting ``recording_fetch``: recordings fetched by reference (seed 001 §6.1.1, §6.2.3).

A CSV row (or a platform event) names its recording instead of carrying it: an http(s) URL in
the ``recording_ref`` field (mapped like any column, e.g. ``ingest.mapping: {recording_ref:
RecordingURL}``; the columns ``recording_url`` and ``recording`` map by default), or a call id
that ``call_id_url_template`` turns into a voice-log API URL. The fetch itself is
:mod:`streams.fetch.worker`'s; these are its limits.
"""

from __future__ import annotations

import re
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streams.media import DEFAULT_MAX_MEDIA_BYTES, MAX_MEDIA_BYTES

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an RFC 9110 token


class RecordingFetchSettings(BaseModel):
    """How one connector's recordings are fetched by reference (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_id_url_template: str | None = Field(
        None,
        description="Voice-log API URL of a call's recording, with a {call_id} token (the call "
        "id is URL-quoted into it). Unset: the row's recording_ref URL is fetched.",
        examples=["https://voicelog.example/calls/{call_id}/audio"],
    )
    call_id_field: str = Field(
        "external_interaction_id",
        min_length=1,
        description="Conversation field (or, if no field has that name, metadata key) holding "
        "the call id for call_id_url_template.",
        examples=["call_sid"],
    )
    auth_header_name: str | None = Field(
        None,
        description="Header sent with voice-log API requests (only to the template's own "
        "scheme, host and port; never to a URL from a row, never across a redirect to "
        "another origin).",
        examples=["Authorization"],
    )
    auth_header_value: SecretStr | None = Field(
        None, description="Value of auth_header_name (a secret: never logged or returned)."
    )
    max_bytes: int = Field(
        DEFAULT_MAX_MEDIA_BYTES,
        ge=1,
        le=MAX_MEDIA_BYTES,
        description="Largest recording fetched; a larger Content-Length is refused before the "
        "body is read, a longer body is cut off (too_large, not retried).",
    )
    allowed_media_types: tuple[str, ...] = Field(
        ("audio/*", "video/*", "application/octet-stream"),
        min_length=1,
        description="Content-Type values accepted ('type/*' wildcards); others are refused "
        "(unsupported_media, not retried).",
    )
    timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Connect timeout, and longest wait for the next bytes of the answer.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Attempts at a fetch that fails with 429, 5xx, 408, a timeout, a refused "
        "connection or a truncated body, before it is dead-lettered.",
    )
    backoff_initial_seconds: float = Field(
        2.0, gt=0, le=3600, description="Wait before the second attempt; doubles each time."
    )
    backoff_max_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Longest wait between attempts (also caps a server's Retry-After).",
    )
    concurrency_per_tenant: int = Field(
        4, ge=1, le=256, description="Fetches of one tenant running at once in one worker."
    )
    max_redirects: int = Field(
        5, ge=0, le=20, description="Redirects followed (each hop checked by the SSRF guard)."
    )

    @field_validator("call_id_url_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value.replace("{call_id}", "x"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if "{call_id}" not in value or "{call_id}" in (parts.hostname or ""):
            raise ValueError("needs a {call_id} token in its path or query")
        if re.search(r"\{(?!call_id\})", value):
            raise ValueError("the only token is {call_id}")
        return value

    @field_validator("auth_header_name")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError("not a valid HTTP header name")
        return value

    @field_validator("allowed_media_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            major, _, minor = item.partition("/")
            if not major or not minor or major == "*":
                raise ValueError(f"{item!r} is not a media type ('audio/wav' or 'audio/*')")
        return tuple(v.lower() for v in value)

    @model_validator(mode="after")
    def _auth_pair(self) -> Self:
        if (self.auth_header_name is None) != (self.auth_header_value is None):
            raise ValueError("auth_header_name and auth_header_value go together")
        if self.auth_header_name is not None and self.call_id_url_template is None:
            raise ValueError(
                "auth_header_name: only sent to call_id_url_template's host, which is unset"
            )
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds is below backoff_initial_seconds")
        return self
