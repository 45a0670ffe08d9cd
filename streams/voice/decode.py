"""Stream a recording as 16-bit PCM frames per channel, with bounded memory.

Contract of :func:`stereo_frames`: the recording (a binary stream; its ``name`` gives the
format) is decoded by miniaudio in chunks of about one second to 16-bit PCM at
``sample_rate``, two channels (a mono recording comes out as two identical channels), and
yielded as ``(left, right)`` byte strings of exactly ``frame_ms`` each (a short last frame is
dropped). Memory stays at a few chunks whatever the length. A format no decoder here handles
raises :class:`AudioError` ``unsupported_codec``; content that does not decode (corrupt,
truncated, empty) raises ``audio_undecodable``. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import array
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO

import miniaudio

#: Formats decoded here (miniaudio's decoders); the other recording formats of seed 003 (mp4,
#: m4a, mpg, wma, webm, aiff, gsm, arf, au) are reported ``unsupported_codec``.
DECODERS = {
    ".wav": miniaudio.FileFormat.WAV,
    ".flac": miniaudio.FileFormat.FLAC,
    ".mp3": miniaudio.FileFormat.MP3,
    ".ogg": miniaudio.FileFormat.VORBIS,
}
#: Frames per decoded chunk, in seconds of audio.
CHUNK_SECONDS = 1


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


def codec_of(name: str) -> miniaudio.FileFormat:
    """Return the decoder for ``name``'s extension; raise ``unsupported_codec`` if none."""
    suffix = PurePosixPath(name).suffix.lower()
    try:
        return DECODERS[suffix]
    except KeyError:
        known = ", ".join(sorted(s[1:] for s in DECODERS))
        raise AudioError(
            "unsupported_codec", f"no decoder for {suffix or 'no extension'} (decoded: {known})"
        ) from None


def stereo_frames(
    stream: IO[bytes], name: str, sample_rate: int, frame_ms: int = 30
) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(left, right)`` PCM frames of ``frame_ms`` (see the module doc)."""
    fmt = codec_of(name)
    per_frame = sample_rate * frame_ms // 1000 * 2  # interleaved samples of both channels
    pending = array.array("h")
    decoded = 0
    try:
        chunks = miniaudio.stream_any(
            _Source(stream),
            source_format=fmt,
            output_format=miniaudio.SampleFormat.SIGNED16,
            nchannels=2,
            sample_rate=sample_rate,
            frames_to_read=sample_rate * CHUNK_SECONDS,
        )
        for chunk in chunks:
            pending.extend(chunk)
            decoded += len(chunk)
            whole = len(pending) - len(pending) % per_frame
            for at in range(0, whole, per_frame):
                frame = pending[at : at + per_frame]
                yield frame[0::2].tobytes(), frame[1::2].tobytes()
            del pending[:whole]
    except miniaudio.MiniaudioError as exc:
        raise AudioError("audio_undecodable", f"{name}: {exc or type(exc).__name__}") from exc
    if decoded == 0:
        raise AudioError("audio_undecodable", f"{name}: no audio decoded")
