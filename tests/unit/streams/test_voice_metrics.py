"""Voice metrics from synthetic speech flags, the voice rules, and bad-audio reasons."""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

import pytest

from streams.analysis.engine import judge
from streams.analysis.profiles import (
    MaxOvertalkSeconds,
    MaxSilenceSeconds,
    MaxSilenceShare,
    TalkListenRatio,
)
from streams.settings import VoiceSettings
from streams.voice.decode import AudioError, codec_of, stereo_frames
from streams.voice.metrics import bridge, runs, voice_metrics
from streams.voice.stage import analyse_stream

FRAME = 10


def flags(*parts: tuple[int, float]) -> bytes:
    """Frames of (flag, seconds) parts."""
    return b"".join(bytes([flag]) * round(secs * 1000 / FRAME) for flag, secs in parts)


def metrics(agent: bytes, customer: bytes | None, **kw: Any) -> dict[str, Any]:
    opts = {"frame_ms": FRAME, "hold_threshold_seconds": 2.0, "hangover_ms": 300, **kw}
    return voice_metrics(agent, customer, **opts)


def test_bridge_fills_short_gaps_between_speech_only() -> None:
    assert bytes(bridge(b"\x01\x00\x00\x01", 3)) == b"\x01\x01\x01\x01"
    assert bytes(bridge(b"\x01\x00\x00\x00\x01", 3)) == b"\x01\x00\x00\x00\x01"
    assert bytes(bridge(b"\x00\x00\x01\x00", 3)) == b"\x00\x00\x01\x00"  # edges stay silent
    assert runs(b"\x00\x01\x01\x00", 1) == [(1, 2)]
    assert runs(b"\x00\x01\x01\x00", 0) == [(0, 1), (3, 1)]


def test_stereo_call_talk_silence_holds_overtalk_ratio() -> None:
    # agent: 0-3 s talk; customer 3.6-6 s; nobody 6-9 s (hold); agent 9-12 s, customer 11-13 s
    agent = flags((1, 3), (0, 6), (1, 3), (0, 1.5))
    customer = flags((0, 3.6), (1, 2.4), (0, 5), (1, 2), (0, 0.5))
    m = metrics(agent, customer)
    assert m["status"] == "analysed" and m["channels"] == 2
    assert m["duration_seconds"] == pytest.approx(13.5, abs=0.03)
    assert m["agent_talk_seconds"] == pytest.approx(6, abs=0.03)
    assert m["customer_talk_seconds"] == pytest.approx(4.4, abs=0.03)
    assert m["longest_silence_seconds"] == pytest.approx(3, abs=0.03)
    assert m["longest_silence_at_seconds"] == pytest.approx(6, abs=0.03)
    assert m["holds"] == 1  # the 0.6 s pause and the 0.5 s tail are no holds
    assert m["overtalk_seconds"] == pytest.approx(1, abs=0.03)
    assert m["overtalk_at_seconds"] == pytest.approx(11, abs=0.03)
    assert m["talk_listen_ratio"] == pytest.approx(6 / 4.4, abs=0.01)
    assert m["silence_seconds"] == pytest.approx(0.6 + 3 + 0.5, abs=0.03)
    assert m["silence_share"] == pytest.approx(4.1 / 13.5, abs=0.01)


def test_word_gaps_are_not_silences() -> None:
    agent = flags((1, 1), (0, 0.21), (1, 1), (0, 0.5), (1, 1))
    m = metrics(agent, bytes(len(agent)))
    assert m["agent_talk_seconds"] == pytest.approx(3.21, abs=0.03)  # the 0.21 s gap bridged
    assert m["longest_silence_seconds"] == pytest.approx(0.5, abs=0.03)
    assert m["talk_listen_ratio"] is None  # the customer never spoke


def test_mono_has_no_speakers_and_empty_has_no_silence() -> None:
    m = metrics(flags((1, 2), (0, 3), (1, 1)), None)
    assert m["channels"] == 1 and m["talk_seconds"] == pytest.approx(3, abs=0.03)
    assert m["agent_talk_seconds"] is None and m["overtalk_seconds"] is None
    assert m["holds"] == 1
    empty = metrics(b"", b"")
    assert empty["duration_seconds"] == 0 and empty["longest_silence_at_seconds"] is None
    with pytest.raises(ValueError):
        metrics(b"\x01", b"")


def test_voice_rules_judge_the_metrics_with_evidence() -> None:
    m = metrics(flags((1, 3), (0, 6), (1, 3)), flags((0, 3.6), (1, 2.4), (0, 3), (1, 3)))
    conv = {"voice": m}
    silence = judge(MaxSilenceSeconds(max_seconds=2), conv)
    assert (
        not silence.passed and silence.evidence[0]["at_seconds"] == m["longest_silence_at_seconds"]
    )
    assert judge(MaxSilenceSeconds(max_seconds=4), conv).passed
    assert judge(MaxSilenceShare(max_share=0.5), conv).passed
    assert not judge(MaxSilenceShare(max_share=0.1), conv).passed
    assert judge(TalkListenRatio(min_ratio=0.5, max_ratio=2), conv).passed
    assert not judge(TalkListenRatio(max_ratio=0.5), conv).passed
    assert not judge(MaxOvertalkSeconds(max_seconds=1), conv).passed  # 3 s of overtalk
    for rule in (MaxSilenceSeconds(max_seconds=1), TalkListenRatio()):
        na = judge(rule, {"voice": {"status": "audio_undecodable", "reason": "x"}})
        assert not na.applicable and "audio_undecodable" in na.evidence[0]["detail"]
        assert not judge(rule, {}).applicable
    mono = {"voice": metrics(flags((1, 2)), None)}
    assert not judge(MaxOvertalkSeconds(max_seconds=1), mono).applicable
    assert not judge(TalkListenRatio(), mono).applicable


def _wav(left: list[int], right: list[int] | None, rate: int = 16000) -> io.BytesIO:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1 if right is None else 2)
        w.setsampwidth(2)
        w.setframerate(rate)
        pairs = left if right is None else [s for p in zip(left, right, strict=True) for s in p]
        w.writeframes(struct.pack(f"<{len(pairs)}h", *pairs))
    out.seek(0)
    return out


def test_decode_streams_exact_frames_and_reasons() -> None:
    frames = list(stereo_frames(_wav([1] * 16000, [2] * 16000), "a.wav", 16000, 30))
    assert len(frames) == 33 and all(len(a) == len(b) == 960 for a, b in frames)
    assert frames[0][0] != frames[0][1]  # channels kept apart
    with pytest.raises(AudioError) as bad:
        list(stereo_frames(io.BytesIO(b"RIFF" + bytes(100)), "a.wav", 16000))
    assert bad.value.reason == "audio_undecodable"
    with pytest.raises(AudioError) as unsupported:
        codec_of("call.arf")
    assert unsupported.value.reason == "unsupported_codec"


def test_silent_and_mono_recordings_analyse_as_silence() -> None:
    silent = analyse_stream(_wav([0] * 32000, None), "m.wav", VoiceSettings(), "left")
    assert silent["channels"] == 1 and silent["talk_seconds"] == 0
    assert silent["longest_silence_seconds"] == pytest.approx(2, abs=0.03)
    noise = analyse_stream(_wav([1, -1] * 16000, [0] * 32000), "s.wav", VoiceSettings(), "left")
    assert noise["channels"] == 2 and noise["agent_talk_seconds"] == 0  # below the floor
    bad = analyse_stream(io.BytesIO(b"garbage" * 100), "x.mp3", VoiceSettings(), "left")
    assert bad["status"] == "audio_undecodable" and bad["reason"]


async def test_stage_reports_unsupported_and_missing_recordings(tmp_path: Any) -> None:
    from streams.media import LocalMediaStore
    from streams.voice.stage import VoiceStage

    store = LocalMediaStore(tmp_path)
    store.put_bytes("acme/a.wav", _wav([0] * 1600, None).getvalue())
    stage = VoiceStage(VoiceSettings(max_concurrency=1), store)
    try:
        assert (await stage.analyse("acme/a.wav", "a.wav", "left"))["status"] == "analysed"
        assert (await stage.analyse("acme/b.wav", "b.wav", "left"))["status"] == (
            "recording_missing"
        )
        assert (await stage.analyse("acme/a.arf", "a.arf", "left"))["status"] == (
            "unsupported_codec"
        )
    finally:
        stage.close()
