"""The pure rules of recordings fetched by reference: URLs, classification, back-off, names,
the settings' validation and the entry point that marks a conversation as waiting."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from streams.fetch.policy import (
    FetchFailed,
    backoff_seconds,
    check_url,
    media_type_allowed,
    parse_retry_after,
    recording_name,
    redact,
    render_url,
    same_origin,
    status_failure,
)
from streams.fetch.request import call_id_of, request_fetch, waiting
from streams.fetch.settings import RecordingFetchSettings

TEMPLATE = "https://voicelog.example/calls/{call_id}/audio"


@pytest.mark.parametrize(
    ("call_id", "path"),
    [
        ("CA123", "/calls/CA123/audio"),
        ("a/../../admin", "/calls/a%2F..%2F..%2Fadmin/audio"),
        ("x?y=1#z", "/calls/x%3Fy%3D1%23z/audio"),
        ("CA 77+x", "/calls/CA%2077%2Bx/audio"),
        ("é", "/calls/%C3%A9/audio"),
    ],
)
def test_the_call_id_is_quoted_into_one_path_segment(call_id: str, path: str) -> None:
    url = render_url(TEMPLATE, call_id)
    parts = urlsplit(url)
    assert parts.hostname == "voicelog.example" and parts.path == path
    assert not parts.query and not parts.fragment


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (404, False),
        (401, False),
        (403, False),
        (410, False),
        (400, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_statuses_are_classified(status: int, retryable: bool) -> None:
    failure = status_failure(status, "https://h.example/r.wav?sig=secret", {})
    assert failure.retryable is retryable and failure.http_status == status
    assert f"HTTP {status}" in str(failure) and "secret" not in str(failure)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    assert 50 <= (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 60
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    failure = status_failure(429, "https://h.example/", {"Retry-After": "12"})
    assert failure.retry_after == 12.0


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    waits = [backoff_seconds(n, 2.0, 60.0, jitter=0.0) for n in range(1, 8)]
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff_seconds(1, 2.0, 60.0, retry_after=30, jitter=0.0) == 30.0
    assert backoff_seconds(1, 2.0, 60.0, retry_after=3600, jitter=0.0) == 60.0
    jittered = backoff_seconds(3, 2.0, 60.0)
    assert 8.0 <= jittered <= 8.8


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h.example/a.wav",
        "file:///etc/passwd",
        "h.example/a.wav",
        "http://",
        "https://user:pw@h.example/a.wav",
        "http://h.example:99999/a.wav",
        "x" * 5000,
    ],
)
def test_bad_urls_are_refused_for_good(url: str) -> None:
    with pytest.raises(FetchFailed) as caught:
        check_url(url)
    assert caught.value.reason == "bad_url" and not caught.value.retryable


def test_media_types_and_wildcards() -> None:
    allowed = ("audio/*", "application/octet-stream")
    assert media_type_allowed("audio/wav", allowed)
    assert media_type_allowed("Audio/MPEG; charset=binary", allowed)
    assert media_type_allowed(None, allowed)  # no Content-Type: octet-stream
    assert not media_type_allowed("text/html", allowed)
    assert not media_type_allowed("video/mp4", allowed)


def test_recording_names_come_from_the_url_or_the_media_type() -> None:
    assert recording_name("https://h.example/x/call%201.WAV?sig=1", None) == "call 1.WAV"
    assert recording_name("https://h.example/calls/CA1/audio", "audio/mpeg") == "recording.mp3"
    assert recording_name("https://h.example/calls/CA1/audio", "audio/x-wav") == "recording.wav"
    assert recording_name("https://h.example/calls/CA1/audio", "text/html") == "recording.bin"


def test_redact_drops_the_query_and_origins_compare_ports() -> None:
    assert redact("https://h.example/a.wav?X-Amz-Signature=abc") == "https://h.example/a.wav?…"
    assert same_origin("https://H.example/a", "https://h.example:443/b")
    assert not same_origin("https://h.example/a", "http://h.example/a")
    assert not same_origin("https://h.example/a", "https://h.example:8443/a")
    assert not same_origin("https://h.example/a", "https://evil.example/a")


def test_settings_name_their_field() -> None:
    with pytest.raises(ValidationError, match="call_id_url_template"):
        RecordingFetchSettings(call_id_url_template="https://voicelog.example/calls/audio")
    with pytest.raises(ValidationError, match="call_id_url_template"):
        RecordingFetchSettings(call_id_url_template="ftp://voicelog.example/{call_id}")
    with pytest.raises(ValidationError, match="go together"):
        RecordingFetchSettings(call_id_url_template=TEMPLATE, auth_header_name="Authorization")
    with pytest.raises(ValidationError, match="allowed_media_types"):
        RecordingFetchSettings(allowed_media_types=("audio",))
    ok = RecordingFetchSettings(
        call_id_url_template=TEMPLATE, auth_header_name="X-Key", auth_header_value="s3cret"
    )
    assert "s3cret" not in repr(ok) and "s3cret" not in ok.model_dump_json()


def _conv(**changes: object) -> dict[str, object]:
    conv: dict[str, object] = {
        "tenant": "acme",
        "external_interaction_id": "CA1",
        "recording_ref": None,
        "metadata": {"call_sid": "SID 9"},
    }
    conv.update(changes)
    return conv


def test_request_fetch_marks_a_url_or_a_call_id_and_leaves_the_rest() -> None:
    by_url = RecordingFetchSettings()
    marked = request_fetch("acme", _conv(recording_ref="https://r.example/a.wav"), by_url)
    assert waiting(marked) and marked["recording"]["source_url"] == "https://r.example/a.wav"
    path = _conv(recording_ref="recordings/a.wav")
    assert request_fetch("acme", path, by_url) is path  # a store path: nothing to fetch
    by_id = RecordingFetchSettings(call_id_url_template=TEMPLATE, call_id_field="call_sid")
    marked = request_fetch("acme", _conv(), by_id)
    assert marked["recording"]["source_url"] == "https://voicelog.example/calls/SID%209/audio"
    assert call_id_of(_conv(), "external_interaction_id") == "CA1"
    assert call_id_of(_conv(metadata={}), "call_sid") is None
    assert not waiting(_conv())
