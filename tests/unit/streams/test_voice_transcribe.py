"""Utterance cutting, transcript placement and the engines' error contract (no audio engine
needed except the offline one, which ships in its wheel)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from streams.voice import queue
from streams.voice.settings import TranscriptionSettings
from streams.voice.stage import FRAME_MS
from streams.voice.transcribe import (
    HttpTranscriber,
    PocketsphinxTranscriber,
    TranscriberError,
    _Channel,
    make_transcriber,
)

FRAME = b"\x01\x00" * (16000 * FRAME_MS // 1000)


def _cut(flags: str, **settings: Any) -> list[tuple[int, int]]:
    """Feed speech flags ('1' speech, '0' silence) to one channel; return (start frame,
    frames) of each utterance."""
    channel = _Channel("agent", TranscriptionSettings(**settings))
    found = []
    for i, f in enumerate(flags):
        done = channel.feed(i, FRAME, f == "1")
        if done is not None:
            found.append((done[0], len(done[1]) // len(FRAME)))
    done = channel.flush()
    if done is not None:
        found.append((done[0], len(done[1]) // len(FRAME)))
    return found


def test_an_utterance_starts_with_its_lead_in_and_ends_after_the_pause() -> None:
    # 600 ms end silence = 20 frames; 300 ms lead-in = 10 frames
    flags = "0" * 30 + "1" * 10 + "0" * 25 + "1" * 5
    # the second starts 5 frames early: only 5 silent frames came since the first ended
    assert _cut(flags) == [(20, 10 + 10 + 20), (60, 5 + 5)]


def test_a_short_pause_stays_inside_the_utterance() -> None:
    assert _cut("1" * 10 + "0" * 5 + "1" * 10) == [(0, 25)]


def test_a_long_stretch_of_speech_is_cut() -> None:
    # max 2 s = 66 frames per utterance
    cuts = _cut("1" * 150, max_utterance_seconds=2)
    assert [n for _, n in cuts] == [66, 66, 18]
    assert [s for s, _ in cuts] == [0, 66, 132]


def test_silence_only_gives_nothing() -> None:
    assert _cut("0" * 100) == []


def test_turns_are_placed_from_the_calls_start_and_counted() -> None:
    start = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
    pending = {
        "status": "pending",
        "engine": "pocketsphinx",
        "recording_key": "acme/x.wav",
        "agent_channel": "left",
        "reason": None,
        "message": None,
    }
    conv = {"started_at": start, "redactions": {"card": 1}, "transcript": pending}
    done = queue.with_turns(conv, [("agent", 1500, "good morning")], {"card": 2})
    assert done["turns"] == [
        {"speaker": "agent", "at": start + dt.timedelta(seconds=1.5), "text": "good morning"}
    ]
    assert done["redactions"] == {"card": 3}
    assert done["transcript"]["status"] == "transcribed"
    assert conv["transcript"]["status"] == "pending"  # the input is not changed


def test_engine_settings_name_what_they_need() -> None:
    with pytest.raises(ValueError, match="model_dir"):
        TranscriptionSettings(engine="whisper")
    with pytest.raises(ValueError, match="url"):
        TranscriptionSettings(engine="http")
    assert make_transcriber(TranscriptionSettings(engine="none")) is None
    assert isinstance(make_transcriber(TranscriptionSettings()), PocketsphinxTranscriber)


@pytest.fixture
def service() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server answering with the status codes queued in the list (200: text)."""
    codes: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            code = codes.pop(0) if codes else 200
            body = json.dumps({"text": " hello "} if code == 200 else {"error": "x"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/audio/transcriptions", codes
    finally:
        server.shutdown()
        server.server_close()


def test_http_engine_retries_outages_and_not_refusals(service: tuple[str, list[int]]) -> None:
    url, codes = service
    engine = HttpTranscriber(TranscriptionSettings(engine="http", url=url, timeout_seconds=5))
    assert engine.transcribe(FRAME) == "hello"
    for code, retryable in ((503, True), (429, True), (400, False), (401, False)):
        codes.append(code)
        with pytest.raises(TranscriberError) as caught:
            engine.transcribe(FRAME)
        assert caught.value.retryable is retryable, code
        assert str(code) in str(caught.value)


def test_http_engine_unreachable_is_retryable() -> None:
    engine = HttpTranscriber(
        TranscriptionSettings(engine="http", url="http://127.0.0.1:9/x", timeout_seconds=2)
    )
    with pytest.raises(TranscriberError) as caught:
        engine.transcribe(FRAME)
    assert caught.value.retryable
