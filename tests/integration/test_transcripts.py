"""Transcripts end to end: a real spoken stereo call (espeak-ng en-us, sox) dropped with its
metadata becomes one case; its first version carries the voice metrics, the next (version + 1)
the transcript as speaker-labelled, timed turns, re-analysed with the text rules. The offline
engine (PocketSphinx, en-us model from its wheel) hears the phrases chosen for it: the agent's
"good morning" (the greeting rule's phrase) and the customer's card number spoken as digits,
which is redacted before it reaches any topic or table. The HTTP engine is driven against a real
OpenAI-compatible speech server (aiohttp, transcribing with PocketSphinx): while it is down the
case keeps its voice metrics and a reason, the next call is transcribed; a restart in the middle
of a slow transcription finishes it once.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import running
from test_bundles import Drop, _case, _clock, watch  # noqa: F401  (watch: a fixture)
from test_redaction import database_cells, raw_records
from test_voice import _near, call  # noqa: F401  (call: the session's spoken call)
from test_voice import _settings as voice_settings
from voice_calls import CARD_DIGITS, SPOKEN_CARD, Call

from streams.analysis.profiles import (
    CustomerSentiment,
    MaxSilenceSeconds,
    Parameter,
    PhrasePresent,
    Profile,
)
from streams.topics import Topics
from streams.voice.transcribe import PocketsphinxTranscriber

PROFILE = Profile(
    id="voice-text",
    parameters=(
        Parameter(
            id="greeting",
            rule=PhrasePresent(speaker="agent", phrases=("good morning",), within_turns=1),
        ),
        Parameter(id="sentiment", rule=CustomerSentiment()),
        Parameter(id="silence", rule=MaxSilenceSeconds(max_seconds=2)),
    ),
)


def _settings(
    kafka: str, prefix: str, tmp_path: Path, drop: Drop, transcription: dict[str, Any]
) -> Any:
    return voice_settings(kafka, prefix, tmp_path, drop, "left", PROFILE, transcription)


def _by_version(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: r["case_version"])


async def test_a_spoken_call_gets_its_transcript_as_the_next_version_redacted(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    call: Call,  # noqa: F811
    watch: Any,  # noqa: F811
) -> None:
    drop = Drop("local", None, tmp_path)  # type: ignore[arg-type]
    settings = _settings(kafka, prefix, tmp_path, drop, {"engine": "pocketsphinx"})
    key = "20261120-140000_anna"
    async with running(settings) as service:
        _clock(service)
        drop.put(f"{key}.wav", call.files["wav"].read_bytes())
        drop.put(f"{key}.json", b'{"disposition": "sale"}')
        first, second = _by_version(await watch.results_for(key, 2, timeout=180))
        case = await _case(service, key)
    assert case is not None and case["version"] == 2 == second["case_version"]
    assert first["case_version"] == 1 and first["transcript"]["status"] == "pending"
    scores = {p["id"]: p for p in first["parameters"]}
    assert not scores["greeting"]["applicable"]  # no turns yet: nothing to judge

    # Version 2: the voice metrics stay, the transcript is the turns, the text rules judge them.
    voice = second["voice"]
    assert voice == first["voice"] and voice["status"] == "analysed"
    assert _near(voice["agent_talk_seconds"], call.agent_talk, 0.10), voice
    assert _near(voice["customer_talk_seconds"], call.customer_talk, 0.10), voice
    assert abs(voice["longest_silence_seconds"] - call.longest_silence) <= 0.5, voice
    assert _near(voice["overtalk_seconds"], call.overtalk, 0.5), voice
    assert second["transcript"]["status"] == "transcribed"
    assert second["transcript"]["engine"] == "pocketsphinx"
    conv = case["conversation"]
    turns = conv["turns"]
    assert [t["speaker"] for t in turns] == ["agent", "customer", "agent", "customer"], turns
    scores = {p["id"]: p for p in second["parameters"]}
    assert scores["greeting"]["passed"], scores["greeting"]
    [evidence] = scores["greeting"]["evidence"]
    assert evidence["turn_index"] == 0 and evidence["speaker"] == "agent"
    assert 0 <= evidence["at_seconds"] <= 1.0  # the agent starts at 0.5 s
    assert scores["sentiment"]["applicable"]
    assert not scores["silence"]["passed"]  # the voice rule still judges version 2
    # The customer's spoken card number is a placeholder, counted, nowhere raw.
    assert "[CARD]" in turns[3]["text"], turns[3]
    assert conv["redactions"] == {"card": 1} == second["redactions"]
    t = Topics(prefix)
    blobs = raw_records(kafka, t.all())
    _rows, cells = database_cells(tmp_path / "data" / "callstream.db")
    for raw in (CARD_DIGITS, SPOKEN_CARD, "four one one one one"):
        assert not [b for b in blobs if raw.encode() in b], raw
        assert not [c for c in cells if raw.encode() in c], raw


class SpeechServer:
    """An OpenAI-compatible ``/v1/audio/transcriptions`` endpoint transcribing with
    PocketSphinx; ``down`` answers 503, ``delay`` slows every answer."""

    def __init__(self) -> None:
        self.down = False
        self.delay = 0.0
        self.requests = 0
        self.engine = PocketsphinxTranscriber()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        form = await request.post()
        assert form["model"] == "whisper-1" and form["language"] == "en"
        assert request.headers.get("Authorization") == "Bearer s3cret"
        if self.down:
            return web.json_response({"error": "overloaded"}, status=503)
        await asyncio.sleep(self.delay)
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        with wave.open(io.BytesIO(upload.file.read())) as w:
            pcm = w.readframes(w.getnframes())
        text = await asyncio.to_thread(self.engine.transcribe, pcm)
        return web.json_response({"text": text})


@pytest.fixture
async def speech() -> AsyncIterator[SpeechServer]:
    server = SpeechServer()
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_http_engine_failure_keeps_the_metrics_and_a_restart_finishes_once(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    call: Call,  # noqa: F811
    speech: SpeechServer,
    watch: Any,  # noqa: F811
) -> None:
    drop = Drop("local", None, tmp_path)  # type: ignore[arg-type]
    transcription = {
        "engine": "http",
        "url": speech.url,
        "api_key": "s3cret",
        "max_attempts": 1,
    }
    settings = _settings(kafka, prefix, tmp_path, drop, transcription)
    down, slow = "20261120-150000_down", "20261120-150100_slow"
    async with running(settings) as service:
        _clock(service)
        speech.down = True
        drop.put(f"{down}.wav", call.files["wav"].read_bytes())
        drop.put(f"{down}.json", b"{}")
        first, second = _by_version(await watch.results_for(down, 2, timeout=120))
        assert second["transcript"]["status"] == "failed"
        assert second["transcript"]["reason"] == "transcriber_failed"
        assert "503" in second["transcript"]["message"]
        assert second["voice"] == first["voice"] and second["voice"]["status"] == "analysed"
        assert not {p["id"]: p for p in second["parameters"]}["greeting"]["applicable"]

        speech.down, speech.delay = False, 3.0
        drop.put(f"{slow}.wav", call.files["wav"].read_bytes())
        drop.put(f"{slow}.json", b"{}")
        await watch.results_for(slow, 1, timeout=120)
        seen = speech.requests
        while speech.requests == seen:  # the worker is inside a slow transcription
            await asyncio.sleep(0.1)
    speech.delay = 0.0
    async with running(settings) as service:  # the restart: the row is claimed again
        _clock(service)
        results = _by_version(await watch.results_for(slow, 2, timeout=180))
        watch.quiet(3)
        results = _by_version(await watch.results_for(slow, 2, timeout=10))
        case = await _case(service, slow)
    assert [r["case_version"] for r in results] == [1, 2]  # once: no third version
    assert case is not None and case["version"] == 2
    assert results[1]["transcript"]["status"] == "transcribed"
    assert results[1]["transcript"]["engine"] == "http"
    scores = {p["id"]: p for p in results[1]["parameters"]}
    assert scores["greeting"]["passed"], scores["greeting"]
