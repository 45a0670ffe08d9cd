"""Voice metrics end to end: real spoken test calls (espeak-ng, sox) dropped with their metadata
on a local connector, the service in-process against the real broker; the case and its result
carry the metrics and the voice rules judge them. Bad audio ends with its reason and the next
call is still analysed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support import connector, running, settings_for
from test_bundles import Drop, _case, _clock, watch  # noqa: F401  (watch: a fixture)
from voice_calls import Call, make_call

from streams.analysis.profiles import (
    MaxOvertalkSeconds,
    MaxSilenceSeconds,
    MaxSilenceShare,
    Parameter,
    Profile,
    TalkListenRatio,
)
from streams.ingest.parse import ParseSettings
from streams.ingest.recordings import RecordingSettings
from streams.settings import ConnectorSettings, TenantSettings

PROFILE = Profile(
    id="voice",
    parameters=(
        Parameter(id="silence", rule=MaxSilenceSeconds(max_seconds=2)),
        Parameter(id="silence-share", rule=MaxSilenceShare(max_share=0.5)),
        Parameter(id="ratio", rule=TalkListenRatio(min_ratio=0.5, max_ratio=3)),
        Parameter(id="overtalk", rule=MaxOvertalkSeconds(max_seconds=5)),
    ),
)


@pytest.fixture(scope="session")
def call(tmp_path_factory: pytest.TempPathFactory) -> Call:
    """One generated stereo call (agent left) in wav, flac, ogg and mp3."""
    return make_call(tmp_path_factory.mktemp("voice"))


def _settings(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    drop: Drop,
    agent: str,
    profile: Profile = PROFILE,
    transcription: dict[str, Any] | None = None,
) -> Any:
    """Tenant acme with one local connector of calls (source system five9, the agent on
    ``agent``), ``profile``, and voice metrics with ``transcription`` (default: none, the
    metrics alone; transcripts are tests/integration/test_transcripts.py's)."""
    base = connector("calls", drop.config())
    conn = ConnectorSettings(
        name=base.name,
        store=base.store,
        poll=base.poll,
        ingest=ParseSettings(source_system="five9"),
        recordings=RecordingSettings(agent_channel=agent),
    )
    tenant = TenantSettings(id="acme", connectors=[conn], profiles=(profile,))
    return settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [conn],
        tenants=[tenant],
        voice={
            "hold_threshold_seconds": 2.5,
            "max_concurrency": 2,
            "transcription": transcription or {"engine": "none"},
        },
    )


def _near(value: float, expected: float, share: float) -> bool:
    return abs(value - expected) <= share * expected


async def test_spoken_calls_in_every_format_bad_audio_and_the_next_call(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    call: Call,
    watch: Any,  # noqa: F811
) -> None:

    drop = Drop("local", None, tmp_path)  # type: ignore[arg-type]
    async with running(_settings(kafka, prefix, tmp_path, drop, "left")) as service:
        _clock(service)
        keys = {}
        for i, (fmt, path) in enumerate(call.files.items()):
            key = keys[fmt] = f"20261120-14{i:02d}00_anna"
            drop.put(f"{key}.{fmt}", path.read_bytes())
            drop.put(f"{key}.json", b'{"disposition": "sale"}')
        drop.put("20261120-150000_bad.wav", os.urandom(40_000))  # corrupt
        drop.put("20261120-150000_bad.json", b"{}")
        drop.put("20261120-150100_arf.arf", os.urandom(40_000))  # no decoder for webex arf
        drop.put("20261120-150100_arf.json", b"{}")
        drop.put("20261120-150200_next.wav", call.files["wav"].read_bytes())
        drop.put("20261120-150200_next.json", b"{}")
        for fmt, key in keys.items():
            [result] = await watch.results_for(key, 1, timeout=120)
            case = await _case(service, key)
            assert case is not None
            voice = case["conversation"]["voice"]
            assert voice["status"] == "analysed" and voice["channels"] == 2, fmt
            assert _near(voice["agent_talk_seconds"], call.agent_talk, 0.10), (fmt, voice)
            assert _near(voice["customer_talk_seconds"], call.customer_talk, 0.10), (fmt, voice)
            assert abs(voice["longest_silence_seconds"] - call.longest_silence) <= 0.5, voice
            assert _near(voice["overtalk_seconds"], call.overtalk, 0.5), (fmt, voice)
            assert abs(voice["duration_seconds"] - call.duration) <= 0.5, (fmt, voice)
            assert voice["holds"] == 1  # the 3 s silence, above the 2.5 s threshold
            ratio = call.agent_talk / call.customer_talk
            assert _near(voice["talk_listen_ratio"], ratio, 0.15), (fmt, voice)
            assert result["voice"] == voice
            scores = {p["id"]: p for p in result["parameters"]}
            assert not scores["silence"]["passed"]  # 3 s > 2 s, with where it starts
            [evidence] = scores["silence"]["evidence"]
            assert abs(evidence["at_seconds"] - voice["longest_silence_at_seconds"]) < 1e-9
            assert all(scores[p]["passed"] for p in ("silence-share", "ratio", "overtalk"))
        for key, reason in (
            ("20261120-150000_bad", "audio_undecodable"),
            ("20261120-150100_arf", "unsupported_codec"),
        ):
            [result] = await watch.results_for(key, 1, timeout=120)
            case = await _case(service, key)
            assert case is not None
            assert case["conversation"]["voice"]["status"] == reason
            assert case["conversation"]["voice"]["reason"]
            assert not any(p["applicable"] for p in result["parameters"])
        await watch.results_for("20261120-150200_next", 1, timeout=120)
        case = await _case(service, "20261120-150200_next")
        assert case is not None and case["conversation"]["voice"]["status"] == "analysed"


async def test_agent_on_the_right_channel_swaps_the_speakers(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    call: Call,
    watch: Any,  # noqa: F811
) -> None:

    drop = Drop("local", None, tmp_path)  # type: ignore[arg-type]
    async with running(_settings(kafka, prefix, tmp_path, drop, "right")) as service:
        _clock(service)
        key = "20261120-140000_anna"
        drop.put(f"{key}.flac", call.files["flac"].read_bytes())
        drop.put(f"{key}.json", b"{}")
        await watch.results_for(key, 1, timeout=120)
        case = await _case(service, key)
        assert case is not None
        voice = case["conversation"]["voice"]
        assert _near(voice["agent_talk_seconds"], call.customer_talk, 0.10), voice
        assert _near(voice["customer_talk_seconds"], call.agent_talk, 0.10), voice
