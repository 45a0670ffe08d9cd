"""The measured stages of the voice benchmark, each meant to run in a fresh (spawned) process.

Contract: :func:`decode_vad` and :func:`transcribe` take the recordings as ``(path, seconds)``
pairs and return a :class:`StageResult`: the wall time of the work alone, the audio seconds
it covered, the process's RSS before the work (``VmRSS``, interpreter and imports included)
and its peaks after it (``VmHWM`` of this process, and ``ru_maxrss``), and what the work found
(a check that it really ran). They raise whatever the code under test raises: a recording that
does not analyse or transcribe fails the benchmark rather than inflating its speed.
"""

from __future__ import annotations

import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streams.settings import VoiceSettings
from streams.voice.settings import TranscriptionSettings
from streams.voice.stage import analyse_stream
from streams.voice.transcribe import RATE, make_transcriber, transcribe_stream


@dataclass(frozen=True)
class StageResult:
    """Figures of one stage run (see the module doc); RSS in KiB."""

    wall_seconds: float
    audio_seconds: float
    rss_before_kib: int
    vm_hwm_kib: int
    ru_maxrss_kib: int
    found: int
    setup_seconds: float = 0.0


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _analyse(path: str) -> int:
    """Analyse one recording as the voice stage does; return its speech frames (a check)."""
    with open(path, "rb") as stream:
        record = analyse_stream(stream, Path(path).name, VoiceSettings(), "left")
    if record["status"] != "analysed":
        raise RuntimeError(f"{path}: voice analysis {record['status']}: {record}")
    return 1


def decode_vad(calls: list[tuple[str, float]], threads: int) -> StageResult:
    """Run ``analyse_stream`` over every call with ``threads`` worker threads."""
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        analysed = sum(pool.map(_analyse, [p for p, _ in calls]))
    wall = time.perf_counter() - t0
    return StageResult(
        wall,
        sum(s for _, s in calls),
        before,
        _status_kib("VmHWM"),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        analysed,
    )


def transcribe(calls: list[tuple[str, float]], settings: TranscriptionSettings) -> StageResult:
    """Transcribe every call, one after the other, with the engine of ``settings``.

    The engine is set up and warmed on one second of silence first (model loading is reported
    as ``setup_seconds``, not counted in the wall time); ``found`` is the utterances with text.
    """
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    engine = make_transcriber(settings)
    if engine is None:
        raise ValueError("transcription engine 'none' has nothing to measure")
    engine.transcribe(bytes(2 * RATE))
    setup = time.perf_counter() - t0
    voice = VoiceSettings(transcription=settings)
    t0 = time.perf_counter()
    found = 0
    for path, _ in calls:
        with open(path, "rb") as stream:
            found += len(transcribe_stream(stream, Path(path).name, voice, "left", 2, engine))
    wall = time.perf_counter() - t0
    return StageResult(
        wall,
        sum(s for _, s in calls),
        before,
        _status_kib("VmHWM"),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        found,
        setup,
    )
