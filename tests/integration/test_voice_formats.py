"""Voice metrics of the recording formats FFmpeg (PyAV) decodes, end to end: the spoken test call
as m4a (aac) and wma (wmav2) dropped with its metadata on a local connector, the service
in-process against the real broker; a truncated m4a ends ``audio_undecodable`` with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import running
from test_bundles import Drop, _case, _clock, watch  # noqa: F401  (watch: a fixture)
from test_voice import _near, _settings
from voice_calls import Call, av_files, make_call


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Call, dict[str, Path]]:
    """The generated stereo call (agent left) and its m4a and wma files."""
    work = tmp_path_factory.mktemp("voice-av")
    call = make_call(work)
    return call, av_files(call, work)


async def test_m4a_and_wma_calls_are_analysed_and_a_truncated_m4a_is_undecodable(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    formats: tuple[Call, dict[str, Path]],
    watch: Any,  # noqa: F811
) -> None:
    call, files = formats
    drop = Drop("local", None, tmp_path)  # type: ignore[arg-type]
    async with running(_settings(kafka, prefix, tmp_path, drop, "left")) as service:
        _clock(service)
        keys = {}
        for i, (fmt, path) in enumerate(files.items()):
            key = keys[fmt] = f"20261121-10{i:02d}00_anna"
            drop.put(f"{key}.{fmt}", path.read_bytes())
            drop.put(f"{key}.json", b"{}")
        m4a = files["m4a"].read_bytes()
        drop.put("20261121-110000_cut.m4a", m4a[: len(m4a) // 2])  # its index is at the end
        drop.put("20261121-110000_cut.json", b"{}")
        for fmt, key in keys.items():
            [result] = await watch.results_for(key, 1, timeout=120)
            case = await _case(service, key)
            assert case is not None
            voice = case["conversation"]["voice"]
            assert voice["status"] == "analysed" and voice["channels"] == 2, (fmt, voice)
            assert _near(voice["agent_talk_seconds"], call.agent_talk, 0.10), (fmt, voice)
            assert _near(voice["customer_talk_seconds"], call.customer_talk, 0.10), (fmt, voice)
            assert abs(voice["longest_silence_seconds"] - call.longest_silence) <= 0.5, voice
            assert abs(voice["duration_seconds"] - call.duration) <= 0.5, (fmt, voice)
            assert result["voice"] == voice
        [result] = await watch.results_for("20261121-110000_cut", 1, timeout=120)
        case = await _case(service, "20261121-110000_cut")
        assert case is not None
        voice = case["conversation"]["voice"]
        assert voice["status"] == "audio_undecodable", voice
        assert voice["reason"].startswith("20261121-110000_cut.m4a: Invalid data"), voice
        assert "/media/" not in voice["reason"]  # no media-store path
