"""The voice stage: decode a stored recording, detect voice activity, compute its metrics.

Contract of :class:`VoiceStage`: :meth:`VoiceStage.analyse` runs the whole blocking work
(streaming the object from the media store, decoding, webrtcvad per channel, metrics) in one of
``voice.max_concurrency`` worker threads: at most that many recordings are decoded at once,
later calls queue (never a spike of threads or memory), and the event loop never blocks. It
returns a VoiceMetrics record: ``analysed`` with the metrics, or ``audio_undecodable`` /
``unsupported_codec`` with the reason when the recording cannot be analysed, or
``recording_missing`` when the object is gone from the media store (it never raises for bad
audio; media-store outages raise so the caller's failure policy retries). Per frame only two
flags are kept (bounded memory: ~67 bytes per second of audio). Stereo: the connector's
``agent_channel`` is the agent's, the other the customer's; a recording whose two decoded
channels are identical throughout (mono, or mono copied to both) is analysed as mono. A frame
is speech when webrtcvad says so and its peak reaches ``voice.silence_floor_dbfs``.
"""

from __future__ import annotations

import array
import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import webrtcvad

from streams.media import MediaStore
from streams.settings import VoiceSettings
from streams.voice.decode import AudioError, codec_of, stereo_frames
from streams.voice.metrics import failed, voice_metrics

log = logging.getLogger(__name__)

#: Frame length given to webrtcvad (10, 20 or 30 ms).
FRAME_MS = 30


def speech_detector(settings: VoiceSettings, rate: int) -> Callable[[bytes], bool]:
    """Return the per-frame speech test (webrtcvad at ``settings.vad_aggressiveness`` and the
    peak floor ``settings.silence_floor_dbfs``) for 16-bit frames of :data:`FRAME_MS` at
    ``rate``. One detector per thread (webrtcvad objects are not shared)."""
    vad = webrtcvad.Vad(settings.vad_aggressiveness)
    floor = round(32768 * 10 ** (settings.silence_floor_dbfs / 20))

    def speech(frame: bytes) -> bool:
        samples = array.array("h", frame)
        loud = max(samples) >= floor or -min(samples) >= floor
        return loud and vad.is_speech(frame, rate)

    return speech


def analyse_stream(
    stream: Any, name: str, settings: VoiceSettings, agent_channel: str
) -> dict[str, Any]:
    """Decode and measure one recording (blocking; see the module doc)."""
    rate = settings.sample_rate
    speech = speech_detector(settings, rate)
    left, right = bytearray(), bytearray()
    mono = True
    try:
        for lf, rf in stereo_frames(stream, name, rate, FRAME_MS):
            said = speech(lf)
            left.append(said)
            if lf == rf:
                right.append(said)
            else:
                mono = False
                right.append(speech(rf))
    except AudioError as exc:
        return failed(exc.reason, str(exc))
    agent, customer = (left, right) if agent_channel == "left" else (right, left)
    return voice_metrics(
        agent,
        None if mono else customer,
        frame_ms=FRAME_MS,
        hold_threshold_seconds=settings.hold_threshold_seconds,
        hangover_ms=settings.hangover_ms,
    )


class VoiceStage:
    """Bounded-concurrency voice analysis of stored recordings (see the module doc)."""

    def __init__(self, settings: VoiceSettings, media: MediaStore) -> None:
        self.settings = settings
        self.media = media
        self._pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="voice")

    def _run(self, key: str, name: str, agent_channel: str) -> dict[str, Any]:
        try:
            codec_of(name)  # an unsupported format is not even opened
        except AudioError as exc:
            return failed(exc.reason, str(exc))
        try:
            stream = self.media.open_read(key)
        except FileNotFoundError:  # removed (retention) before a late metadata update
            return failed("recording_missing", f"{key} is no longer in the media store")
        with stream:
            return analyse_stream(stream, name, self.settings, agent_channel)

    async def analyse(self, key: str, name: str, agent_channel: str) -> dict[str, Any]:
        """Return the VoiceMetrics record of the recording stored under ``key``."""
        loop = asyncio.get_running_loop()
        record = await loop.run_in_executor(self._pool, self._run, key, name, agent_channel)
        log.info("recording %s: voice %s", key, record["status"])
        return record

    def close(self) -> None:
        """Stop the worker threads (after the running analyses)."""
        self._pool.shutdown(wait=True)
