"""The pure rules of a recording fetch: URLs, outcomes, back-off, media types, names.

::

    FetchFailed(reason, retryable, http_status)
      retryable      429, 5xx, 408, a timeout, a refused/reset connection, a truncated body
                     -> tried again after :func:`backoff_seconds`, up to ``max_attempts``
      not retryable  other 4xx (404, 401, 403, 410, ...), too_large, unsupported_media,
                     address_refused (SSRF guard), bad_url, too_many_redirects
                     -> dead-lettered at once (``recording_fetch_failed``)
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import random
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from streams.media import MEDIA_SUFFIXES

#: Extensions of media types whose names do not say them (mimetypes knows the rest).
_EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/amr": ".amr",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/webm": ".webm",
    "video/webm": ".webm",
    "video/mp4": ".mp4",
    "audio/aiff": ".aiff",
    "audio/x-aiff": ".aiff",
    "audio/basic": ".au",
    "audio/gsm": ".gsm",
    "audio/x-ms-wma": ".wma",
    "video/mpeg": ".mpg",
}
MAX_URL_CHARS = 4096


class FetchFailed(Exception):
    """One attempt at a fetch failed; ``reason`` is a short code, ``http_status`` the answer's
    status when there was one (see the module doc for ``retryable``)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after = retry_after


def render_url(template: str, call_id: str) -> str:
    """Put ``call_id`` into ``template``, URL-quoted (no ``/``, ``?``, ``#`` or ``..`` can
    change which resource is asked for)."""
    return template.replace("{call_id}", quote(call_id, safe=""))


def check_url(url: str) -> None:
    """Raise :class:`FetchFailed` ``bad_url`` unless ``url`` is an absolute http(s) URL."""
    if len(url) > MAX_URL_CHARS:
        raise FetchFailed("bad_url", f"URL longer than {MAX_URL_CHARS} characters", retryable=False)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise FetchFailed("bad_url", f"{url!r} is not a URL: {exc}", retryable=False) from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FetchFailed(
            "bad_url", f"{url!r} is not an absolute http(s) URL", retryable=False
        ) from None
    if parts.username is not None or parts.password is not None:
        raise FetchFailed("bad_url", "URLs with credentials are refused", retryable=False)


def is_fetchable(ref: str | None) -> bool:
    """Tell whether a ``recording_ref`` is an http(s) URL (a store path is not fetched)."""
    return bool(ref) and str(ref).lower().startswith(("http://", "https://"))


def status_failure(status: int, url: str, headers: Any = None) -> FetchFailed:
    """Return how a non-2xx, non-redirect answer fails the attempt."""
    retryable = status in (408, 429) or status >= 500
    retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None else None
    return FetchFailed(
        "http_error",
        f"GET {redact(url)}: HTTP {status}",
        retryable=retryable,
        http_status=status,
        retry_after=retry_after,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, float((when - dt.datetime.now(dt.UTC)).total_seconds()))


def backoff_seconds(
    attempts: int,
    initial: float,
    maximum: float,
    retry_after: float | None = None,
    *,
    jitter: float | None = None,
) -> float:
    """Wait before the next attempt after ``attempts`` failed ones: ``initial * 2**(n-1)``
    with up to 10% jitter, at least a server's Retry-After, never more than ``maximum``."""
    base = initial * 2 ** max(0, attempts - 1)
    spread = random.uniform(0.0, 0.1) if jitter is None else jitter  # noqa: S311 - not crypto
    wait = float(base * (1 + spread))
    if retry_after is not None:
        wait = max(wait, retry_after)
    return float(min(wait, maximum))


def media_type_allowed(content_type: str | None, allowed: tuple[str, ...]) -> bool:
    """Tell whether a Content-Type (parameters ignored) matches an allowed type or wildcard."""
    kind = (content_type or "application/octet-stream").split(";", 1)[0].strip().lower()
    major = kind.split("/", 1)[0]
    return any(a == kind or (a.endswith("/*") and a[:-2] == major) for a in allowed)


def recording_name(url: str, content_type: str | None) -> str:
    """Name a fetched recording: the URL's last path part when it has a recording extension,
    else ``recording`` + the extension its media type stands for (``recording.bin`` when
    neither says: the media store then refuses it as unsupported_media)."""
    base = PurePosixPath(unquote(urlsplit(url).path)).name
    if PurePosixPath(base).suffix.lower() in MEDIA_SUFFIXES:
        return base
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    ext = _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or ""
    return f"recording{ext if ext in MEDIA_SUFFIXES else '.bin'}"


def redact(url: str) -> str:
    """Return ``url`` without its query string (it may hold a signed token) for messages."""
    parts = urlsplit(url)
    tail = "?…" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{tail}"


def same_origin(a: str, b: str) -> bool:
    """Tell whether two URLs share scheme, host and port (where an auth header may go)."""
    pa, pb = urlsplit(a), urlsplit(b)

    def port(p: Any) -> int:
        return int(p.port or (443 if p.scheme.lower() == "https" else 80))

    return (pa.scheme.lower(), (pa.hostname or "").lower(), port(pa)) == (
        pb.scheme.lower(),
        (pb.hostname or "").lower(),
        port(pb),
    )
