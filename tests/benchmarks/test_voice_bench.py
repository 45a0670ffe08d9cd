"""Voice benchmark: decode + voice activity seconds per audio hour, transcription real-time
factor per engine and peak RSS, over generated calls of 2-5 minutes (figures only; nothing
about speed is asserted, only that every call was analysed and speech was transcribed).

The calls (``voice_bench_calls.py``: espeak-ng en-us speech on two channels with sox, agent
left and customer right, alternating turns, pauses, one or two holds, some overlap; formats
cycling wav, flac, ogg, mp3) are generated once and cached under
``~/.cache/callstream/voice-bench-<digest>/``. Each stage runs in a fresh spawned process, so
its peak RSS is its own (``VmHWM`` of that process; growth = peak minus its RSS after imports):

- decode + VAD + metrics: ``streams.voice.stage.analyse_stream`` over every call, exactly what
  the voice stage runs per recording (miniaudio streaming decode to 16 kHz, webrtcvad per
  30 ms frame and channel, the metrics), with one worker thread and with two
  (``voice.max_concurrency`` defaults to 2); printed as seconds per audio hour.
- transcription: ``transcribe_stream`` (VAD utterances per channel, each given to the engine)
  over the shortest ``CALLSTREAM_VOICE_BENCH_TRANSCRIBE_CALLS`` calls, one thread, printed as
  the real-time factor (processing seconds / audio seconds; below 1 is faster than real time).
  pocketsphinx is measured; whisper only when ``CALLSTREAM_BENCH_WHISPER_MODEL_DIR`` names a
  faster-whisper model folder (nothing can be downloaded here); the http engine is an
  operator's service and is not measured.

Sizes: ``CALLSTREAM_VOICE_BENCH_CALLS`` (10 in CI) and
``CALLSTREAM_VOICE_BENCH_TRANSCRIBE_CALLS`` (1 in CI: pocketsphinx runs at a real-time factor
of about 0.2 on one core, so 100 calls, about 6 audio hours, would take over an hour). The
full size transcribes 20 calls (about 45 audio minutes)::

    make bench-voice    # CALLSTREAM_VOICE_BENCH_CALLS=100, ..._TRANSCRIBE_CALLS=20
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from report import print_table
from voice_bench_calls import bench_calls
from voice_bench_stages import StageResult, decode_vad, transcribe

from streams.voice.settings import TranscriptionSettings

pytestmark = pytest.mark.benchmark

CALLS = int(os.environ.get("CALLSTREAM_VOICE_BENCH_CALLS", "10"))
TRANSCRIBE_CALLS = int(os.environ.get("CALLSTREAM_VOICE_BENCH_TRANSCRIBE_CALLS", "1"))
WHISPER_DIR = os.environ.get("CALLSTREAM_BENCH_WHISPER_MODEL_DIR")
FULL_CALLS = 100
KIB_MB = 1024 / 1_000_000


def _in_fresh_process(fn: Callable[..., StageResult], *args: Any) -> StageResult:
    """Run ``fn(*args)`` in a newly spawned interpreter (its peak RSS is the stage's own)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _row(label: str, calls: int, r: StageResult, note: str) -> list[str]:
    hours = r.audio_seconds / 3600
    return [
        label,
        str(calls),
        f"{hours:.2f}",
        f"{r.wall_seconds:.1f}",
        f"{r.wall_seconds / hours:.1f}",
        f"{r.audio_seconds / r.wall_seconds:.0f}",
        f"{r.wall_seconds / r.audio_seconds:.3f}",
        f"{r.vm_hwm_kib * KIB_MB:.0f}",
        f"{(r.vm_hwm_kib - r.rss_before_kib) * KIB_MB:.0f}",
        f"{r.ru_maxrss_kib * KIB_MB:.0f}",
        note,
    ]


def _not_measured(label: str, why: str) -> list[str]:
    return [label, *["-"] * 9, f"not measured: {why}"]


def test_voice_decode_vad_and_transcription_speed_and_memory() -> None:
    t0 = time.perf_counter()
    calls = bench_calls(CALLS)
    made_s = time.perf_counter() - t0
    pairs = [(str(c.path), c.seconds) for c in calls]
    shortest = sorted(pairs, key=lambda p: p[1])[:TRANSCRIBE_CALLS]

    rows = []
    for threads in (1, 2):
        r = _in_fresh_process(decode_vad, pairs, threads)
        assert r.found == len(pairs)  # every call decoded and analysed
        rows.append(_row(f"decode+VAD+metrics, {threads} thr", len(pairs), r, ""))

    sphinx = _in_fresh_process(transcribe, shortest, TranscriptionSettings(engine="pocketsphinx"))
    assert sphinx.found > 0  # the engine heard speech
    note = f"{sphinx.found} turns; model load {sphinx.setup_seconds:.1f} s not counted"
    rows.append(_row("transcribe pocketsphinx", len(shortest), sphinx, note))
    if WHISPER_DIR:
        settings = TranscriptionSettings(engine="whisper", model_dir=Path(WHISPER_DIR))
        whisper = _in_fresh_process(transcribe, shortest, settings)
        assert whisper.found > 0
        note = f"{whisper.found} turns; model load {whisper.setup_seconds:.1f} s not counted"
        rows.append(_row("transcribe whisper", len(shortest), whisper, note))
    else:
        why = "no model folder (CALLSTREAM_BENCH_WHISPER_MODEL_DIR unset)"
        rows.append(_not_measured("transcribe whisper", why))
    rows.append(_not_measured("transcribe http", "an operator's service"))

    formats = sorted({c.fmt for c in calls})
    reduced = (
        "" if CALLS >= FULL_CALLS else f" (REDUCED for CI; full {FULL_CALLS}: make bench-voice)"
    )
    minutes = [c.seconds / 60 for c in calls]
    print_table(
        f"Voice analysis, {len(calls)} generated calls{reduced}",
        [
            "stage",
            "calls",
            "audio h",
            "wall s",
            "s / audio h",
            "x real time",
            "RTF",
            "peak RSS MB",
            "growth MB",
            "ru_maxrss MB",
            "note",
        ],
        rows,
        [
            f"Calls: {min(minutes):.1f}-{max(minutes):.1f} min, stereo 22.05 kHz, formats "
            f"{', '.join(formats)}; generated or read from the cache in {made_s:.1f} s (not "
            "counted). Transcription: the shortest calls, one thread, warm engine.",
            "Each stage runs in a fresh spawned process: peak RSS is its VmHWM (interpreter and "
            "imports included), growth is that peak minus its RSS before the stage. ru_maxrss "
            "(getrusage) is an upper bound: Linux carries the spawning parent's peak across "
            "exec. RTF = processing s / audio s (a call's two channels count once).",
            f"Machine: {os.cpu_count()} cores, shared with other work while this ran.",
        ],
    )
