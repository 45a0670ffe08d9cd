"""Recording durations from real headers; garbage and truncated headers give None, never raise."""

from __future__ import annotations

import io
import math
import random
import struct
import wave

import pytest

from streams.ingest.mediainfo import HEAD_BYTES, probe_duration

# ----------------------------------------------------------------------------- builders


def wav_bytes(seconds: float, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    """A real WAV file written by Python's wave module."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * (round(seconds * rate) * channels * width))
    return out.getvalue()


def chunk(cid: bytes, body: bytes, endian: str = "<") -> bytes:
    return cid + struct.pack(endian + "I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def riff(
    chunks: list[bytes], magic: bytes = b"RIFF", endian: str = "<", riff_size: int | None = None
) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    size = len(body) if riff_size is None else riff_size
    return magic + struct.pack(endian + "I", size) + body


def fmt_chunk(
    code: int, channels: int, rate: int, width: int, endian: str = "<", extra: bytes = b""
) -> bytes:
    align = channels * width
    body = struct.pack(endian + "HHIIHH", code, channels, rate, rate * align, align, width * 8)
    return chunk(b"fmt ", body + extra, endian)


def extensible_fmt(sub_code: int, channels: int, rate: int, width: int) -> bytes:
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    extra = struct.pack("<HHIH", 22, width * 8, 0x4, sub_code) + guid_tail
    return fmt_chunk(0xFFFE, channels, rate, width, extra=extra)


def flac_bytes(rate: int, total_samples: int, channels: int = 1, bits: int = 16) -> bytes:
    """A FLAC stream header: ``fLaC`` + a last-block STREAMINFO (and no frames)."""
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total_samples
    info = struct.pack(">HH", 4096, 4096) + b"\0\0\x10" + b"\0\x20\0" + struct.pack(">Q", packed)
    info += b"\x00" * 16  # MD5 of the audio
    assert len(info) == 34
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def extended(value: float) -> bytes:
    """Encode a positive float as an IEEE 754 80-bit extended (AIFF's sample rate)."""
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= m < 1
    return struct.pack(">HQ", exponent - 1 + 16383, int(mantissa * (1 << 64)))


def aiff_bytes(frames: int, rate: float, form: bytes = b"AIFF", channels: int = 1) -> bytes:
    comm = struct.pack(">hIh", channels, frames, 16) + extended(rate)
    if form == b"AIFC":
        comm += b"NONE\x0enot compressed\x00"
    data = b"\x00" * 8 + b"\x00" * (frames * channels * 2)
    body = form + chunk(b"FVER", b"\xa2\x80\x51\x40", ">") if form == b"AIFC" else form
    body += chunk(b"COMM", comm, ">") + chunk(b"SSND", data, ">")
    return b"FORM" + struct.pack(">I", len(body)) + body


def au_bytes(seconds: float, rate: int = 8000, encoding: int = 1, size_field: int | None = None):
    widths = {1: 1, 3: 2}
    data = b"\x7f" * int(seconds * rate * widths[encoding])
    size = len(data) if size_field is None else size_field
    return b".snd" + struct.pack(">IIIII", 24, size, encoding, rate, 1) + data


# ----------------------------------------------------------------------------- WAV


@pytest.mark.parametrize(
    ("seconds", "rate", "channels", "width"),
    [(1.5, 8000, 1, 2), (3.0, 44100, 2, 2), (0.25, 16000, 1, 1), (2.0, 48000, 2, 3)],
)
def test_wav_written_by_the_wave_module(
    seconds: float, rate: int, channels: int, width: int
) -> None:
    data = wav_bytes(seconds, rate, channels, width)
    assert probe_duration("call.wav", data[:HEAD_BYTES], len(data)) == pytest.approx(seconds)


def test_wav_duration_comes_from_the_head_and_the_file_size_only() -> None:
    data = wav_bytes(30.0, 8000)  # 480 kB: more than the head
    assert len(data) > HEAD_BYTES
    assert probe_duration("x.wav", data[:HEAD_BYTES], len(data)) == pytest.approx(30.0)


@pytest.mark.parametrize("bad_size", [0, 0xFFFFFFFF, 10**9])
def test_wav_with_an_unfinished_or_impossible_data_size_uses_the_file_size(bad_size: int) -> None:
    frames = 8000 * 4
    body = b"\x00" * (frames * 2)
    head = riff([fmt_chunk(1, 1, 8000, 2)]) + b"data" + struct.pack("<I", bad_size)
    data = head + body
    assert probe_duration("x.wav", data[:HEAD_BYTES], len(data)) == pytest.approx(4.0)


def test_wav_extensible_rifx_and_other_chunks_before_data() -> None:
    pcm = b"\x00" * (16000 * 2 * 2 * 2)  # 2 s, 16 kHz, stereo, 16 bit
    ext = riff(
        [
            chunk(b"JUNK", b"\x00" * 27),  # odd length: padded
            extensible_fmt(1, 2, 16000, 2),
            chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00\x00"),
            chunk(b"data", pcm),
        ]
    )
    assert probe_duration("x.wav", ext, len(ext)) == pytest.approx(2.0)
    rifx = riff(
        [fmt_chunk(1, 2, 16000, 2, ">"), chunk(b"data", pcm, ">")], magic=b"RIFX", endian=">"
    )
    assert probe_duration("x.wav", rifx, len(rifx)) == pytest.approx(2.0)


def test_rf64_takes_the_data_size_from_ds64() -> None:
    seconds, rate = 5.0, 8000
    pcm = b"\x00" * int(seconds * rate * 2)
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, len(pcm), int(seconds * rate), 0))
    head = riff([ds64, fmt_chunk(1, 1, rate, 2)], magic=b"RF64", riff_size=0xFFFFFFFF)
    data = head + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm + b"trailing-chunk-bytes"
    assert probe_duration("x.wav", data[:HEAD_BYTES], len(data)) == pytest.approx(seconds)


def test_compressed_wav_uses_the_fact_chunk_or_the_byte_rate() -> None:
    # GSM 6.10 in WAV (code 0x31): 65-byte blocks of 320 samples at 8 kHz, 1625 bytes/s.
    fmt = chunk(b"fmt ", struct.pack("<HHIIHHHH", 0x31, 1, 8000, 1625, 65, 0, 2, 320))
    blocks = 50  # 50 * 320 samples = 2 s
    audio = b"\x00" * (65 * blocks)
    with_fact = riff([fmt, chunk(b"fact", struct.pack("<I", 320 * blocks)), chunk(b"data", audio)])
    assert probe_duration("x.wav", with_fact, len(with_fact)) == pytest.approx(2.0)
    without = riff([fmt, chunk(b"data", audio)])
    assert probe_duration("x.wav", without, len(without)) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- FLAC, AIFF, AU


def test_flac_streaminfo() -> None:
    head = flac_bytes(44100, 44100 * 75)
    assert probe_duration("x.flac", head, 5_000_000) == pytest.approx(75.0)
    assert probe_duration("x.flac", flac_bytes(8000, 12_000), 10_000) == pytest.approx(1.5)


def test_flac_without_a_sample_count_has_no_duration() -> None:
    assert probe_duration("x.flac", flac_bytes(44100, 0), 5_000_000) is None


def test_flac_behind_an_id3v2_tag() -> None:
    tag_body = b"TIT2" + struct.pack(">I", 6) + b"\0\0" + b"\x03hello"
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 0, len(tag_body)]) + tag_body
    data = tag + flac_bytes(16000, 16000 * 9)
    assert probe_duration("x.flac", data, len(data)) == pytest.approx(9.0)


@pytest.mark.parametrize("form", [b"AIFF", b"AIFC"])
@pytest.mark.parametrize("rate", [8000.0, 22050.0, 44100.0])
def test_aiff_comm_chunk(form: bytes, rate: float) -> None:
    frames = int(rate * 1.5)
    data = aiff_bytes(frames, rate, form)
    assert probe_duration("x.aiff", data[:HEAD_BYTES], len(data)) == pytest.approx(1.5)


def test_au_with_a_size_and_with_an_unknown_size() -> None:
    data = au_bytes(3.0, encoding=1)
    assert probe_duration("x.au", data, len(data)) == pytest.approx(3.0)
    data = au_bytes(2.0, encoding=3, size_field=0xFFFFFFFF)
    assert probe_duration("x.au", data, len(data)) == pytest.approx(2.0)


def test_raw_gsm_frames() -> None:
    assert probe_duration("x.gsm", b"\xd0" * 33, 33 * 500) == pytest.approx(10.0)
    assert probe_duration("x.gsm", b"\xd0" * 33, 33 * 500 + 1) is None  # not whole frames


@pytest.mark.parametrize("name", ["x.mp3", "x.mp4", "x.ogg", "x.webm", "x.wma", "x.m4a"])
def test_formats_without_a_fixed_header_have_no_duration(name: str) -> None:
    head = b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64" + b"\x00" * 400
    assert probe_duration(name, head, 1_000_000) is None


# ----------------------------------------------------------------------------- garbage


def samples() -> list[bytes]:
    return [
        wav_bytes(1.0),
        riff([extensible_fmt(1, 2, 16000, 2), chunk(b"data", b"\0" * 64000)]),
        flac_bytes(44100, 441000),
        aiff_bytes(8000, 8000.0),
        aiff_bytes(8000, 8000.0, b"AIFC"),
        au_bytes(1.0),
    ]


@pytest.mark.parametrize("index", range(6))
def test_every_truncation_of_a_header_returns_a_number_or_none(index: int) -> None:
    data = samples()[index]
    for cut in range(len(data) if len(data) < 200 else 200):
        result = probe_duration("x.wav", data[:cut], cut)
        assert result is None or (math.isfinite(result) and result >= 0)
        result = probe_duration("x.wav", data[:cut], len(data))  # head cut, full size known
        assert result is None or (math.isfinite(result) and result >= 0)


def test_random_mutations_never_raise() -> None:
    rng = random.Random(7)
    originals = samples()
    for _ in range(5000):
        data = bytearray(rng.choice(originals)[:512])
        for _flip in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos] = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
        size = rng.choice([len(data), 0, rng.randrange(1 << 40)])
        result = probe_duration(rng.choice(["a.wav", "a.flac", "a.gsm"]), bytes(data), size)
        assert result is None or (math.isfinite(result) and 0 <= result <= 7 * 24 * 3600)


def test_pure_garbage_and_empty_input() -> None:
    rng = random.Random(11)
    assert probe_duration("x.wav", b"", 0) is None
    for magic in (b"RIFF", b"RF64", b"RIFX", b"FORM", b".snd", b"fLaC", b"ID3", b""):
        for _ in range(300):
            head = magic + rng.randbytes(rng.randrange(0, 300))
            if magic in (b"RIFF", b"RIFX", b"RF64") and rng.random() < 0.5:
                head = head[:8] + b"WAVE" + head[12:]
            if magic == b"FORM" and rng.random() < 0.5:
                head = head[:8] + b"AIFF" + head[12:]
            result = probe_duration("x.wav", head, rng.randrange(1 << 34))
            assert result is None or (math.isfinite(result) and result >= 0)


def test_a_chunk_walk_is_bounded() -> None:
    # 4,000 empty chunks before fmt: the walk gives up instead of reading on.
    many = riff([chunk(b"JUNK", b"") for _ in range(4000)] + [fmt_chunk(1, 1, 8000, 2)])
    assert probe_duration("x.wav", many[:HEAD_BYTES], len(many)) is None
