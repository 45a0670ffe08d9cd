"""Transcription of recordings into speaker-labelled, timed turns, with pluggable engines.

Contract of :func:`transcribe_stream`: the recording is streamed once (decoded at 16 kHz by
:func:`~streams.voice.decode.stereo_frames`), each channel is cut into utterances by voice
activity detection (the voice metrics' detector: speech starts an utterance with 300 ms of
lead-in, ``end_silence_ms`` of silence ends it, ``max_utterance_seconds`` cuts a long one), and
each utterance is given to the :class:`Transcriber`. The result is a list of
:class:`Utterance` (speaker, start in seconds, text) ordered by start time: the channel
``agent_channel`` is the agent's, the other the customer's; a mono recording (``channels`` 1)
is transcribed once with speaker ``system`` (the speakers are not told apart). Utterances the
engine hears nothing in are dropped. Memory: one utterance per channel (at most
``max_utterance_seconds`` of 16 kHz PCM). Blocking: run it in a worker thread.

Engines (:func:`make_transcriber`): ``pocketsphinx`` (offline; the en-us model inside its wheel,
no download; accuracy is modest), ``whisper`` (faster-whisper with an operator-provided model
folder), ``http`` (an OpenAI-compatible ``/v1/audio/transcriptions`` service). An engine raises
:class:`TranscriberError`; ``retryable`` says whether trying again later may help.
"""

from __future__ import annotations

import collections
import io
import json
import threading
import urllib.error
import urllib.request
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from streams.settings import VoiceSettings
from streams.voice.decode import stereo_frames
from streams.voice.settings import TranscriptionSettings
from streams.voice.stage import FRAME_MS, speech_detector

#: Transcribers hear 16 kHz mono 16-bit PCM.
RATE = 16000
#: Audio kept before the first speech frame of an utterance (the VAD reacts late to onsets).
LEAD_IN_MS = 300


class TranscriberError(Exception):
    """The engine could not transcribe; ``retryable``: a later try may succeed (service down)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Utterance:
    """One turn of a transcript: who, when (seconds from the start), what."""

    speaker: str
    start: float
    text: str


class Transcriber(Protocol):
    """Turns one utterance (16 kHz mono 16-bit PCM) into text. Called from worker threads: an
    engine keeps per-thread state itself."""

    name: str

    def transcribe(self, pcm: bytes) -> str:
        """Return the words heard in ``pcm`` ('' for none); raise TranscriberError."""
        ...


class PocketsphinxTranscriber:
    """CMU PocketSphinx, fully offline: the en-us acoustic model, language model and
    dictionary shipped inside the ``pocketsphinx`` wheel (or ``model_dir``). One decoder per
    thread (about 110 MB each, measured by tests/benchmarks/test_voice_bench.py)."""

    name = "pocketsphinx"

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir
        self._local = threading.local()

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            from pocketsphinx import Decoder

            options: dict[str, Any] = {"samprate": RATE, "loglevel": "FATAL"}
            if self.model_dir is not None:
                options |= {
                    "hmm": str(self.model_dir / "hmm"),
                    "lm": str(self.model_dir / "lm.bin"),
                    "dict": str(self.model_dir / "dict.dict"),
                }
            try:
                decoder = self._local.decoder = Decoder(**options)
            except (RuntimeError, OSError, ValueError) as exc:
                raise TranscriberError(
                    f"pocketsphinx cannot load its model: {exc}", retryable=False
                ) from exc
        return decoder

    def transcribe(self, pcm: bytes) -> str:
        decoder = self._decoder()
        decoder.start_utt()
        decoder.process_raw(pcm, False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return str(hyp.hypstr).strip() if hyp is not None else ""


class WhisperTranscriber:
    """faster-whisper (CTranslate2) on the CPU with the model folder the operator provides
    (``model_dir``; nothing is downloaded). Needs ``pip install 'callstream[whisper]'``."""

    name = "whisper"

    def __init__(self, model_dir: Path, language: str) -> None:
        try:
            from faster_whisper import WhisperModel  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise TranscriberError(
                "voice.transcription.engine whisper needs faster-whisper: "
                "pip install 'callstream[whisper]'",
                retryable=False,
            ) from exc
        if not (model_dir / "model.bin").is_file():
            raise TranscriberError(
                f"voice.transcription.model_dir {model_dir} has no model.bin (a CTranslate2 "
                "faster-whisper model folder)",
                retryable=False,
            )
        self.language = language
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
        self._lock = threading.Lock()  # one model, used by one thread at a time

    def transcribe(self, pcm: bytes) -> str:
        import numpy as np  # type: ignore[import-not-found,unused-ignore]

        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        with self._lock:
            segments, _info = self._model.transcribe(audio, language=self.language, beam_size=1)
            return " ".join(s.text.strip() for s in segments).strip()


class HttpTranscriber:
    """An OpenAI-compatible speech service (faster-whisper-server, whisper.cpp server, a cloud
    API): each utterance is POSTed as a WAV file; the JSON answer's ``text`` is the turn. 5xx,
    429, timeouts and refused connections are retryable; other 4xx are not."""

    name = "http"

    def __init__(self, settings: TranscriptionSettings) -> None:
        assert settings.url is not None  # noqa: S101 - the settings validator requires it
        self.url = settings.url
        self.settings = settings

    def transcribe(self, pcm: bytes) -> str:
        boundary = uuid.uuid4().hex
        body = _multipart(
            boundary,
            {"model": self.settings.model, "language": self.settings.language},
            ("file", "utterance.wav", _wav(pcm)),
        )
        request = urllib.request.Request(  # noqa: S310 - http(s) only (settings pattern)
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        if self.settings.api_key is not None:
            request.add_header(
                "Authorization", f"Bearer {self.settings.api_key.get_secret_value()}"
            )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as answer:  # noqa: S310
                payload = json.loads(answer.read(1_000_000))
        except urllib.error.HTTPError as exc:
            exc.close()
            retry = exc.code >= 500 or exc.code in (408, 429)
            raise TranscriberError(
                f"speech service answered HTTP {exc.code}", retryable=retry
            ) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TranscriberError(f"speech service unreachable: {exc}", retryable=True) from exc
        except ValueError as exc:
            raise TranscriberError(
                f"speech service answered no JSON: {exc}", retryable=False
            ) from exc
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise TranscriberError("speech service answer has no 'text'", retryable=False)
        return text.strip()


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return out.getvalue()


def _multipart(boundary: str, fields: dict[str, str], file: tuple[str, str, bytes]) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    name, filename, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        f"\r\nContent-Type: audio/wav\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def make_transcriber(settings: TranscriptionSettings) -> Transcriber | None:
    """Return the configured engine (None for ``none``); raise TranscriberError when it cannot
    be set up (a missing package or model: a configuration error naming the field)."""
    if settings.engine == "none":
        return None
    if settings.engine == "pocketsphinx":
        return PocketsphinxTranscriber(settings.model_dir)
    if settings.engine == "whisper":
        assert settings.model_dir is not None  # noqa: S101 - the settings validator requires it
        return WhisperTranscriber(settings.model_dir, settings.language)
    return HttpTranscriber(settings)


class _Channel:
    """Cuts one channel's frames into utterances (see the module doc)."""

    def __init__(self, speaker: str, settings: TranscriptionSettings) -> None:
        self.speaker = speaker
        self.lead = collections.deque[bytes](maxlen=LEAD_IN_MS // FRAME_MS)
        self.end_frames = max(1, settings.end_silence_ms // FRAME_MS)
        self.max_frames = int(settings.max_utterance_seconds * 1000 // FRAME_MS)
        self.buffer = bytearray()
        self.frames = 0
        self.start = 0
        self.quiet = 0

    def feed(self, index: int, frame: bytes, speech: bool) -> tuple[int, bytes] | None:
        """Take frame ``index``; return ``(start frame, pcm)`` when an utterance ends."""
        if not self.frames:
            if not speech:
                self.lead.append(frame)
                return None
            self.start = index - len(self.lead)
            self.buffer.extend(b"".join(self.lead))
            self.frames = len(self.lead)
            self.lead.clear()
        self.buffer.extend(frame)
        self.frames += 1
        self.quiet = 0 if speech else self.quiet + 1
        if self.quiet >= self.end_frames or self.frames >= self.max_frames:
            return self.flush()
        return None

    def flush(self) -> tuple[int, bytes] | None:
        """End the utterance in progress, if any."""
        if not self.frames:
            return None
        done = (self.start, bytes(self.buffer))
        self.buffer.clear()
        self.frames = self.quiet = 0
        return done


def utterances(
    frames: Iterator[tuple[bytes, bytes]],
    voice: VoiceSettings,
    agent_channel: str,
    channels: int,
) -> Iterator[tuple[str, float, bytes]]:
    """Yield ``(speaker, start seconds, pcm)`` of each utterance of ``frames`` (16 kHz)."""
    settings = voice.transcription
    if channels == 1:
        cuts = [_Channel("system", settings)]
    else:
        agent_left = agent_channel == "left"
        cuts = [
            _Channel("agent" if agent_left else "customer", settings),
            _Channel("customer" if agent_left else "agent", settings),
        ]
    detectors = [speech_detector(voice, RATE) for _ in cuts]
    for index, pair in enumerate(frames):
        for side, cut in enumerate(cuts):
            done = cut.feed(index, pair[side], detectors[side](pair[side]))
            if done is not None:
                yield cut.speaker, done[0] * FRAME_MS / 1000, done[1]
    for cut in cuts:
        done = cut.flush()
        if done is not None:
            yield cut.speaker, done[0] * FRAME_MS / 1000, done[1]


def transcribe_stream(
    stream: IO[bytes],
    name: str,
    voice: VoiceSettings,
    agent_channel: str,
    channels: int,
    transcriber: Transcriber,
    progress: Callable[[], None] | None = None,
) -> list[Utterance]:
    """Transcribe one recording (see the module doc); ``progress`` is called per utterance
    (the caller renews its lease there). Raises AudioError for audio that does not decode."""
    found: list[Utterance] = []
    frames = stereo_frames(stream, name, RATE, FRAME_MS)
    for speaker, start, pcm in utterances(frames, voice, agent_channel, channels):
        text = transcriber.transcribe(pcm)
        if text:
            found.append(Utterance(speaker, round(start, 3), text))
        if progress is not None:
            progress()
    found.sort(key=lambda u: (u.start, u.speaker))
    return found
