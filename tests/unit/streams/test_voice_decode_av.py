"""Recording formats decoded by FFmpeg (PyAV): real tones encoded with PyAV or sox, decoded
through :func:`stereo_frames`; corrupt content, no audio stream, too long and no decoder."""

from __future__ import annotations

import array
import io
import math
import struct
import subprocess
import sys
import wave
from pathlib import Path

import av
import pytest

from streams.media import MEDIA_SUFFIXES
from streams.voice import decode
from streams.voice.decode import AudioError, codec_of, stereo_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from voice_calls import transcode

RATE = 22050  # the source rate: every format is resampled to 16 kHz
SECONDS = 2.0
AMPLITUDE = 8000


def _tone(path: Path, channels: int = 2, rate: int = RATE) -> Path:
    """A 440 Hz tone on the left channel only (or mono) written by the wave module."""
    samples = []
    for i in range(int(SECONDS * rate)):
        value = round(AMPLITUDE * math.sin(2 * math.pi * 440 * i / rate))
        samples += [value, 0][:channels]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


def _decode(path: Path, stream: io.RawIOBase | None = None) -> tuple[array.array[int], ...]:
    """Both decoded channels of ``path`` at 16 kHz, 30 ms frames."""
    left, right = array.array("h"), array.array("h")
    with stream or path.open("rb") as s:
        for lf, rf in stereo_frames(s, path.name, 16000, 30):  # type: ignore[arg-type]
            left.frombytes(lf)
            right.frombytes(rf)
    return left, right


def _peak(samples: array.array[int]) -> int:
    return max(map(abs, samples), default=0)


# extension, FFmpeg muxer, encoder, encoder rate
ENCODED = [
    ("m4a", "ipod", "aac", None),
    ("mp4", "mp4", "aac", None),
    ("wma", "asf", "wmav2", None),
    ("webm", "webm", "libopus", 48000),
    ("opus", "ogg", "libopus", 48000),
    ("mpg", "mpeg", "mp2", None),
    ("aiff", "aiff", "pcm_s16be", None),
    ("au", "au", "pcm_s16be", None),
]


@pytest.mark.parametrize(("ext", "muxer", "codec", "rate"), ENCODED)
def test_stereo_formats_decode_with_their_length_and_channels_apart(
    tmp_path: Path, ext: str, muxer: str, codec: str, rate: int | None
) -> None:
    path = transcode(_tone(tmp_path / "tone.wav"), tmp_path / f"call.{ext}", muxer, codec, rate)
    assert codec_of(path.name).library == "ffmpeg"
    left, right = _decode(path)
    assert len(left) / 16000 == pytest.approx(SECONDS, abs=0.1)
    assert _peak(left) == pytest.approx(AMPLITUDE, rel=0.15)  # the tone, at its level
    assert _peak(right) < AMPLITUDE * 0.01  # the silent right channel stays silent


def test_sox_formats_and_mono_sources_give_two_identical_channels(tmp_path: Path) -> None:
    mono = _tone(tmp_path / "mono.wav", channels=1, rate=8000)
    for ext in ("gsm", "aiff", "au"):
        out = tmp_path / f"call.{ext}"
        subprocess.run(["sox", str(mono), str(out)], check=True, capture_output=True)
        left, right = _decode(out)
        assert left == right, ext
        assert len(left) / 16000 == pytest.approx(SECONDS, abs=0.1), ext
        assert _peak(left) == pytest.approx(AMPLITUDE, rel=0.15), ext  # not -3 dB (up-mix)
    amr = transcode(mono, tmp_path / "call.amr", "amr", "libopencore_amrnb")
    left, right = _decode(amr)
    assert left == right and len(left) / 16000 == pytest.approx(SECONDS, abs=0.1)


class _Pipe(io.RawIOBase):
    """A stream that can only be read forward (like an S3 body)."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        chunk = self.data.read(len(buf))
        buf[: len(chunk)] = chunk
        return len(chunk)


def test_webm_streams_from_a_non_seekable_stream(tmp_path: Path) -> None:
    path = transcode(_tone(tmp_path / "t.wav"), tmp_path / "c.webm", "webm", "libopus", 48000)
    left, right = _decode(path, _Pipe(path.read_bytes()))
    assert len(left) / 16000 == pytest.approx(SECONDS, abs=0.1) and _peak(right) < 100


def _undecodable(path: Path) -> str:
    with pytest.raises(AudioError) as bad:
        _decode(path)
    assert bad.value.reason == "audio_undecodable"
    assert str(bad.value).startswith(f"{path.name}: ") and str(path) not in str(bad.value)
    return str(bad.value)


def test_corrupt_truncated_and_silent_containers_are_undecodable(tmp_path: Path) -> None:
    good = transcode(_tone(tmp_path / "t.wav"), tmp_path / "good.m4a", "ipod", "aac")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.m4a"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    assert "Invalid data" in _undecodable(truncated)
    garbled = tmp_path / "garbled.m4a"
    garbled.write_bytes(bytes(b ^ 0x5A for b in data))
    _undecodable(garbled)
    empty = tmp_path / "empty.wma"
    empty.write_bytes(b"")
    _undecodable(empty)
    video = tmp_path / "video.webm"
    with av.open(str(video), mode="w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame(32, 32, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 40]) * plane.buffer_size)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert "no audio stream" in _undecodable(video)


def test_decoded_length_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_SECONDS", 1)
    path = transcode(_tone(tmp_path / "t.wav"), tmp_path / "long.aiff", "aiff", "pcm_s16be")
    assert "longer than" in _undecodable(path)
    assert "longer than" in _undecodable(_tone(tmp_path / "long.wav"))  # miniaudio too


def test_formats_nothing_decodes_are_unsupported_and_every_decoded_one_is_accepted() -> None:
    for name in ("20201012-140253_joe.arf", "call.xyz", "call"):
        with pytest.raises(AudioError) as unsupported:
            list(stereo_frames(io.BytesIO(b"x" * 100), name, 16000))
        assert unsupported.value.reason == "unsupported_codec"
        assert "m4a" in str(unsupported.value) and "wav" in str(unsupported.value)
    assert set(decode.DECODERS) <= MEDIA_SUFFIXES
