"""Recordings fetched by reference, end to end: CSV rows name their recording by URL or by call id
(through a voice-log API URL template with an auth header); the service in-process against the
real broker fetches each from a real HTTP server on loopback into the media store.

What a user sees: every row opens its case at once; a fetched recording updates the case with
the stored object (bytes and SHA-256 equal to what the server served); a fetch that finally
fails leaves the case marked missing (reason, HTTP status) and a ``recording_fetch_failed``
dead letter; the rest of the file goes on; a re-sent row or a replayed dead letter fetches again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from servers.recordings import RecordingServer
from sqlalchemy import select
from support import FAST_POLL, TopicReader, running, settings_for

from connectors.local import LocalConfig
from streams.api.deadletters import settings_of
from streams.cases.store import case_id, cases
from streams.control.deadletters import dead_letters
from streams.control.replay import ReplayIn, ReplayParts, replay
from streams.fetch import queue
from streams.fetch.settings import RecordingFetchSettings
from streams.ingest.parse import ParseSettings
from streams.service import Service
from streams.settings import ConnectorSettings
from streams.topics import Topics


def _wav(seconds: float, tone: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes([tone % 256, 1]) * int(8000 * seconds))
    return out.getvalue()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer(slow_seconds=20) as srv:
        yield srv


def _fetch_settings(**changes: Any) -> RecordingFetchSettings:
    base: dict[str, Any] = {
        "max_bytes": 200_000,
        "timeout_seconds": 1.0,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.2,
        "backoff_max_seconds": 0.5,
    }
    return RecordingFetchSettings(**{**base, **changes})


def _connector(name: str, root: Path, fetch: RecordingFetchSettings) -> ConnectorSettings:
    return ConnectorSettings(
        name=name,
        store=LocalConfig(root=root),
        poll=FAST_POLL,
        ingest=ParseSettings(source_system="five9"),
        recording_fetch=fetch,
    )


def _csv(rows: list[tuple[str, str]]) -> bytes:
    lines = ["external_interaction_id,started_at,agent_id,recording_url"]
    lines += [f"{ext},2026-11-20T09:00:00Z,a-1,{url}" for ext, url in rows]
    return ("\n".join(lines) + "\n").encode()


async def _case(service: Service, ext: str) -> dict[str, Any] | None:
    assert service.cases is not None
    async with service.cases.engine.connect() as conn:
        row = (
            await conn.execute(
                select(cases).where(cases.c.case_id == case_id("acme", "five9", ext))
            )
        ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["conversation"] = json.loads(found["conversation"])
    return found


async def _wait_case(
    service: Service,
    ext: str,
    ok: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        seen = await _case(service, ext)
        if seen is not None and ok(seen):
            return seen
        await asyncio.sleep(0.2)
    rec = seen["conversation"].get("recording") if seen else None
    raise AssertionError(
        f"case {ext}: timed out; last seen version {seen and seen['version']}, recording {rec}"
    )


def _status(want: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: (c["conversation"].get("recording") or {}).get("status") == want


def _stored_bytes(case: dict[str, Any]) -> bytes:
    ref = case["conversation"]["recording_ref"]
    assert ref.startswith("file://") and "#sha256=" in ref
    return Path(urlsplit(ref.split("#", 1)[0]).path).read_bytes()


def _dead(reader: TopicReader, ext_path: str) -> list[dict[str, Any]]:
    return [
        r
        for r in reader.records
        if r["reason"] == "recording_fetch_failed" and ext_path in (r["excerpt"] or "")
    ]


async def test_csv_recording_urls_end_in_the_right_state(
    kafka: str, prefix: str, tmp_path: Path, server: RecordingServer, database_url: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    wavs = {
        name: _wav(0.5, i) for i, name in enumerate(["a.wav", "c.wav", "d.wav", "e.wav", "f.wav"])
    }
    for name, data in wavs.items():
        server.put(name, data)
    rows = [
        ("ok-1", server.url("/ok/a.wav")),
        ("nf-1", server.url("/ok/late.wav")),  # 404 until it is put
        ("busy-1", server.url("/busy/2/c.wav")),  # 429, 429, then 200
        ("slow-1", server.url("/slow/d.wav")),  # stalls longer than timeout_seconds
        ("trunc-1", server.url("/truncated/e.wav")),  # Content-Length larger than the body
        ("big-1", server.url("/big/500000")),  # Content-Length over max_bytes
        ("stream-1", server.url("/stream/500000")),  # chunked: cut off while streaming
        ("html-1", server.url("/text/a.wav")),  # text/html is not a recording
        (
            "ssrf-1",
            server.url("/redirect?to=" + quote("http://169.254.169.254/latest/meta-data", safe="")),
        ),
        ("hop-1", server.url("/redirect?to=" + quote(server.url("/ok/f.wav"), safe=""))),
        ("plain-1", "recordings/000001.wav"),  # a store path: kept as it is, nothing fetched
    ]
    conn = _connector("calls", inbox, _fetch_settings())
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [conn],
        database_url=database_url,
        api={"connect_allow": ["127.0.0.1"]},
    )
    dead = TopicReader(kafka, Topics(prefix).dead_letter, "callstream.DeadLetter")
    try:
        async with running(settings) as service:
            (inbox / "export.csv").write_bytes(_csv(rows))

            # every row opens its case at once, the plain one without a fetch
            plain = await _wait_case(service, "plain-1", lambda c: True)
            assert plain["conversation"].get("recording") is None
            assert plain["conversation"]["recording_ref"] == "recordings/000001.wav"

            ok = await _wait_case(service, "ok-1", _status("stored"))
            assert ok["version"] == 2  # opened pending, updated with the stored object
            rec = ok["conversation"]["recording"]
            assert _stored_bytes(ok) == wavs["a.wav"]
            assert rec["sha256"] == hashlib.sha256(wavs["a.wav"]).hexdigest()
            assert rec["size"] == len(wavs["a.wav"]) and rec["media_type"] == "audio/wav"
            assert rec["http_status"] == 200 and rec["attempts"] == 1
            assert ok["conversation"]["recording_ref"].endswith("#sha256=" + rec["sha256"])
            assert ok["conversation"]["duration_ms"] == 500  # from the fetched WAV header

            busy = await _wait_case(service, "busy-1", _status("stored"))
            assert _stored_bytes(busy) == wavs["c.wav"]
            assert busy["conversation"]["recording"]["attempts"] == 3
            assert server.hits["/busy/2/c.wav"] == 3

            hop = await _wait_case(service, "hop-1", _status("stored"))
            assert _stored_bytes(hop) == wavs["f.wav"]

            expected = {
                "nf-1": ("http_error", 404, 1),
                "slow-1": ("timeout", 200, 3),
                "trunc-1": ("truncated", 200, 3),
                "big-1": ("too_large", 200, 1),
                "stream-1": ("too_large", 200, 1),
                "html-1": ("unsupported_media", 200, 1),
                "ssrf-1": ("address_refused", None, 1),
            }
            for ext, (reason, status, attempts) in expected.items():
                case = await _wait_case(service, ext, _status("missing"))
                rec = case["conversation"]["recording"]
                assert (rec["reason"], rec["http_status"], rec["attempts"]) == (
                    reason,
                    status,
                    attempts,
                ), ext
                assert case["conversation"]["recording_ref"] == dict(rows)[ext]
            assert server.hits["/ok/late.wav"] == 1  # a 404 is not retried
            assert server.hits["/slow/d.wav"] == 3
            assert not any(p.startswith("/latest") for p in server.hits)  # never reached

            await dead.wait_for(
                lambda rs: len([r for r in rs if r["reason"] == "recording_fetch_failed"]) >= 7
            )
            [nf] = _dead(dead, "/ok/late.wav")
            assert "HTTP 404" in nf["message"] and nf["stage"] == "fetch"
            assert nf["path"] == "export.csv" and nf["row"] == 2
            [ssrf] = _dead(dead, "/redirect")
            assert "169.254.169.254" in ssrf["message"] and "link-local" in ssrf["message"]
            [slow] = _dead(dead, "/slow/d.wav")
            assert "timed out" in slow["message"] and "reason timeout" in slow["message"]
            # nothing half-written is left in the media store
            media = tmp_path / "data" / "media"
            assert not [p for p in media.rglob("*") if p.name.endswith(".part")]

            # the recording appears; a re-sent row fetches it and updates the case
            server.put("late.wav", wavs["d.wav"])
            (inbox / "again.csv").write_bytes(_csv([("nf-1", server.url("/ok/late.wav"))]))
            nf_case = await _wait_case(service, "nf-1", _status("stored"))
            assert _stored_bytes(nf_case) == wavs["d.wav"]

            # the same file again: the stored recording is reused, nothing is fetched again
            before = server.hits["/ok/a.wav"]
            (inbox / "export-copy.csv").write_bytes(_csv(rows[:1]))
            await asyncio.sleep(3)
            again = await _case(service, "ok-1")
            assert again is not None and again["version"] == 2
            assert server.hits["/ok/a.wav"] == before

            # a replayed dead letter fetches again too (the server answers at once now)
            server.slow_seconds = 0
            [dl_id] = await _dead_letter_ids(service, "/slow/d.wav")
            parts = ReplayParts(
                service.api.engine,
                service.codec,
                service.topics,
                service.api.producer,
                service.media,
                settings.kafka.message_max_bytes,
                await settings_of(service.api, "acme"),
                service.redactors,
            )
            done = await replay(parts, "acme", ReplayIn(ids=[dl_id]), "test")
            assert done.replayed == 1, done
            slow_case = await _wait_case(service, "slow-1", _status("stored"))
            assert _stored_bytes(slow_case) == wavs["d.wav"]
            again = await replay(parts, "acme", ReplayIn(ids=[dl_id]), "test")
            assert again.items[0].outcome == "already_replayed"
            state = await queue.state_of(
                service.cases.engine, "acme", case_id("acme", "five9", "slow-1")
            )
            assert state is not None and state["status"] == "stored" and state["generation"] == 2
    finally:
        dead.close()


async def _dead_letter_ids(service: Service, url_path: str) -> list[str]:
    """Wait for the recorded dead letters of the fetch of ``url_path``; return their ids."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with service.api.engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(dead_letters.c.id).where(
                            dead_letters.c.reason == "recording_fetch_failed",
                            dead_letters.c.excerpt.contains(url_path),
                        )
                    )
                ).scalars()
            )
        if ids:
            return ids
        await asyncio.sleep(0.2)
    raise AssertionError(f"no dead letter recorded for {url_path}")


async def test_call_ids_through_the_voice_log_api(
    kafka: str, prefix: str, tmp_path: Path, server: RecordingServer
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    audio = _wav(0.25, 7)
    server.calls["CA 77+x"] = audio  # quoted into the URL: the server sees the id as it is
    fetch = _fetch_settings(
        call_id_url_template=server.url("/calls/{call_id}/audio"),
        auth_header_name=RecordingServer.auth_header,
        auth_header_value=server.auth_value,
    )
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [_connector("voicelog", inbox, fetch)],
        api={"connect_allow": ["127.0.0.1"]},
    )
    async with running(settings) as service:
        # call ids in the id column; the recording column is empty
        (inbox / "calls.csv").write_bytes(_csv([("CA 77+x", ""), ("CA-unknown", "")]))
        case = await _wait_case(service, "CA 77+x", _status("stored"))
        assert _stored_bytes(case) == audio
        rec = case["conversation"]["recording"]
        assert rec["source_url"] == server.url("/calls/CA%2077%2Bx/audio")
        assert rec["sha256"] == hashlib.sha256(audio).hexdigest()
        assert rec["media_type"] == "audio/x-wav"
        [sent] = server.headers["/calls/CA 77+x/audio"]
        assert sent[RecordingServer.auth_header] == server.auth_value
        unknown = await _wait_case(service, "CA-unknown", _status("missing"))
        assert unknown["conversation"]["recording"]["http_status"] == 404
        # the secret never reaches a case, the queue or the log of the row
        assert server.auth_value not in json.dumps(case["conversation"])
        assert service.cases is not None
        state = await queue.state_of(
            service.cases.engine, "acme", case_id("acme", "five9", "CA-unknown")
        )
        assert state is not None and server.auth_value not in (state["message"] or "")


async def test_a_fetch_in_flight_at_a_restart_is_done_after_it(
    kafka: str, prefix: str, tmp_path: Path, server: RecordingServer
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    audio = _wav(0.25, 3)
    server.put("r.wav", audio)
    server.slow_seconds = 4  # shorter than timeout_seconds: slow, not failed
    fetch = _fetch_settings(timeout_seconds=10.0)
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [_connector("calls", inbox, fetch)],
        api={"connect_allow": ["127.0.0.1"]},
    )
    async with running(settings) as service:
        (inbox / "calls.csv").write_bytes(_csv([("rs-1", server.url("/slow/r.wav"))]))
        await _wait_case(service, "rs-1", _status("pending"))
        deadline = time.monotonic() + 30
        while server.hits["/slow/r.wav"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert server.hits["/slow/r.wav"] == 1  # stopped while the body is on its way
    async with running(settings) as service:
        case = await _wait_case(service, "rs-1", _status("stored"))
        assert _stored_bytes(case) == audio
        assert server.hits["/slow/r.wav"] == 2
        assert case["conversation"]["recording"]["attempts"] == 1  # a stop is not a failure
