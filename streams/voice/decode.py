"""Stream a recording as 16-bit PCM frames per channel, with bounded memory.

Contract of :func:`stereo_frames`: the recording (a binary stream; its ``name`` gives the
format) is decoded to 16-bit PCM at ``sample_rate``, two channels (a mono recording comes out as
two identical channels, at its own level), and yielded as ``(left, right)`` byte strings of
exactly ``frame_ms`` each (a short last frame is dropped). Which library decodes what
(:data:`DECODERS`):

- miniaudio: wav, flac, mp3, ogg (vorbis), in chunks of about one second;
- FFmpeg (PyAV), streaming from the binary stream with the demuxer the extension names, first
  audio stream only (video and other streams are skipped), resampled by libswresample: m4a, mp4
  (aac, ...), mpg / mpeg (mp2, ...), wma (asf), webm (opus, vorbis), aiff / aif, au, gsm (raw
  GSM 6.10, 8 kHz), opus (ogg), amr. A recording with more than two channels is down-mixed to
  stereo. MP4 whose index sits at the end of the file needs a seekable stream (a non-seekable
  one then fails as ``audio_undecodable``).

Memory stays at a few decoded chunks whatever the length (the resampler is flushed at the end;
nothing buffers the whole file). A format no decoder here handles (webex arf, unknown
extensions) raises :class:`AudioError` ``unsupported_codec`` naming the decoded ones; content
that does not decode (corrupt, truncated, empty, no audio stream) or decodes to more than
:data:`MAX_SECONDS` of audio raises ``audio_undecodable`` naming the file and the decoder's
error. Errors of the stream itself (a media-store outage) propagate unchanged. Blocking: call
it from a worker thread.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, Literal

import av
import miniaudio

#: Frames per decoded chunk (miniaudio), in seconds of audio.
CHUNK_SECONDS = 1
#: Longest decoded audio accepted (guards against decompression bombs): 6 hours.
MAX_SECONDS = 6 * 3600


@dataclass(frozen=True, slots=True)
class Decoder:
    """How one extension is decoded: the library and its name for the format (a miniaudio
    ``FileFormat`` member or an FFmpeg demuxer)."""

    library: Literal["miniaudio", "ffmpeg"]
    format: str


def _table(library: Literal["miniaudio", "ffmpeg"], formats: dict[str, str]) -> dict[str, Decoder]:
    return {suffix: Decoder(library, fmt) for suffix, fmt in formats.items()}


#: Extension -> decoder: miniaudio for its four formats (fast), FFmpeg for the other recording
#: formats of seed 003 that it decodes (plus common spellings: mpeg, aif, opus, amr). Seed 003's
#: webex ``.arf`` has no decoder and is reported ``unsupported_codec``.
DECODERS: dict[str, Decoder] = {
    **_table("miniaudio", {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "VORBIS"}),
    **_table(
        "ffmpeg",
        {
            ".m4a": "mov",
            ".mp4": "mov",
            ".mpg": "mpeg",
            ".mpeg": "mpeg",
            ".wma": "asf",
            ".webm": "matroska",
            ".aiff": "aiff",
            ".aif": "aiff",
            ".au": "au",
            ".gsm": "gsm",
            ".opus": "ogg",
            ".amr": "amr",
        },
    ),
}


class AudioError(Exception):
    """A recording that cannot be analysed: ``reason`` is ``unsupported_codec`` or
    ``audio_undecodable`` (input-caused and permanent)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Source(miniaudio.StreamableSource):  # type: ignore[misc]
    """miniaudio's view of a binary stream."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def read(self, num_bytes: int) -> bytes:
        return self.stream.read(num_bytes)

    def seek(self, offset: int, origin: miniaudio.SeekOrigin) -> bool:
        if not self.stream.seekable():
            return False
        whence = 1 if origin == miniaudio.SeekOrigin.CURRENT else 0
        self.stream.seek(offset, whence)
        return True


def codec_of(name: str) -> Decoder:
    """Return the decoder for ``name``'s extension; raise ``unsupported_codec`` if none."""
    suffix = PurePosixPath(name).suffix.lower()
    try:
        return DECODERS[suffix]
    except KeyError:
        known = ", ".join(sorted(s[1:] for s in DECODERS))
        raise AudioError(
            "unsupported_codec", f"no decoder for {suffix or 'no extension'} (decoded: {known})"
        ) from None


def _miniaudio_chunks(
    stream: IO[bytes], name: str, fmt: str, rate: int
) -> Iterator[array.array[int]]:
    """Interleaved stereo chunks decoded by miniaudio."""
    try:
        yield from miniaudio.stream_any(
            _Source(stream),
            source_format=miniaudio.FileFormat[fmt],
            output_format=miniaudio.SampleFormat.SIGNED16,
            nchannels=2,
            sample_rate=rate,
            frames_to_read=rate * CHUNK_SECONDS,
        )
    except miniaudio.MiniaudioError as exc:
        raise AudioError("audio_undecodable", f"{name}: {exc or type(exc).__name__}") from exc


def _stereo(frame: av.AudioFrame) -> array.array[int]:
    """Interleaved stereo samples of a packed s16 frame (a mono one duplicated)."""
    channels = frame.layout.nb_channels
    samples = array.array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
    if channels == 2:
        return samples
    both = array.array("h", bytes(len(samples) * 4))
    both[0::2] = samples
    both[1::2] = samples
    return both


def _resampled(frames: Iterable[av.AudioFrame], rate: int) -> Iterator[array.array[int]]:
    """Frames resampled to s16 at ``rate``: mono stays mono (no -3 dB up-mix), the rest is
    stereo. A change of source layout or rate mid-stream flushes and starts a new resampler."""
    resampler: av.AudioResampler | None = None
    source: tuple[str, int, str] | None = None
    for frame in frames:
        shape = (frame.format.name, frame.sample_rate, frame.layout.name)
        if resampler is None or shape != source:
            if resampler is not None:
                yield from map(_stereo, resampler.resample(None))
            layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
            resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
            source = shape
        yield from map(_stereo, resampler.resample(frame))
    if resampler is not None:
        yield from map(_stereo, resampler.resample(None))


def _ffmpeg_chunks(stream: IO[bytes], name: str, fmt: str, rate: int) -> Iterator[array.array[int]]:
    """Interleaved stereo chunks of the first audio stream, demuxed and decoded by FFmpeg."""
    try:
        with av.open(stream, mode="r", format=fmt) as container:
            if not container.streams.audio:
                raise AudioError("audio_undecodable", f"{name}: no audio stream")
            yield from _resampled(container.decode(container.streams.audio[0]), rate)
    except av.FFmpegError as exc:
        raise AudioError("audio_undecodable", f"{name}: {_ffmpeg_message(exc)}") from exc


def _ffmpeg_message(exc: av.FFmpegError) -> str:
    """FFmpeg's error and its last error log line, without the file name (a media-store path
    that is not the recording's name)."""
    message = exc.strerror or type(exc).__name__
    log: Any = exc.log  # (level, component, line) at run time; the stub says otherwise
    if log and str(log[-1]).strip():
        message += f" ({str(log[-1]).strip()})"
    return message


_CHUNKS: dict[str, Callable[[IO[bytes], str, str, int], Iterator[array.array[int]]]] = {
    "miniaudio": _miniaudio_chunks,
    "ffmpeg": _ffmpeg_chunks,
}


def stereo_frames(
    stream: IO[bytes], name: str, sample_rate: int, frame_ms: int = 30
) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(left, right)`` PCM frames of ``frame_ms`` (see the module doc)."""
    decoder = codec_of(name)
    per_frame = sample_rate * frame_ms // 1000 * 2  # interleaved samples of both channels
    most = MAX_SECONDS * sample_rate * 2
    pending = array.array("h")
    decoded = 0
    for chunk in _CHUNKS[decoder.library](stream, name, decoder.format, sample_rate):
        decoded += len(chunk)
        if decoded > most:
            raise AudioError(
                "audio_undecodable", f"{name}: longer than {MAX_SECONDS / 3600:g} hours of audio"
            )
        pending.extend(chunk)
        whole = len(pending) - len(pending) % per_frame
        for at in range(0, whole, per_frame):
            frame = pending[at : at + per_frame]
            yield frame[0::2].tobytes(), frame[1::2].tobytes()
        del pending[:whole]
    if decoded == 0:
        raise AudioError("audio_undecodable", f"{name}: no audio decoded")
