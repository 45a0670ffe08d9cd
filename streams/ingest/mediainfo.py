"""Recording duration from the first bytes of a media file.

Contract of :func:`probe_duration`: given the file name, the first bytes of the file (the media
stores keep the first :data:`HEAD_BYTES`) and its total size, return the duration in seconds
where the format says it in its header, else None. It never raises, whatever the bytes, and its
work is bounded by the length of ``head`` (chunk walks are capped at :data:`_MAX_CHUNKS`).

Formats read (identified by their magic bytes, not the name):

- WAV: RIFF (little-endian), RIFX (big-endian) and RF64 (64-bit sizes in ``ds64``); ``fmt`` then
  ``data``. PCM-like codes (PCM, IEEE float, A-law, mu-law, and WAVE_FORMAT_EXTENSIBLE with one
  of those sub-formats) use frames = data bytes / block align; compressed codes use the ``fact``
  chunk's sample count when there is one, else data bytes / average bytes per second. A data
  size of 0 or 0xFFFFFFFF (a writer that never finished its header, or streamed) or one past
  the end of the file is replaced by what the file holds after the data header.
- FLAC: STREAMINFO total samples / sample rate (an ID3v2 tag in front is skipped); 0 total
  samples means "unknown": None.
- AIFF / AIFF-C: COMM sample frames / sample rate (80-bit extended float).
- Sun/NeXT AU (``.snd``): data size (or the file size when unknown) / bytes per second for the
  fixed-size encodings.
- Raw GSM 6.10 (``.gsm``, no header): 33-byte frames of 20 ms.

MP3, MP4/M4A, Ogg, WebM, WMA, MPEG and ARF return None: their duration is not in a fixed
header (it needs frame scanning or container indexes that may sit at the end of the file).
"""

from __future__ import annotations

import math
import struct
from pathlib import PurePosixPath

#: How many leading bytes the media stores keep for probing.
HEAD_BYTES = 64 * 1024
#: Most chunks walked in a RIFF/AIFF header (bounds the work on crafted input).
_MAX_CHUNKS = 256
#: Longer than this (a week) is taken as a corrupt header rather than a recording.
_MAX_SECONDS = 7 * 24 * 3600.0

_WAVE_PCM = 0x0001
_WAVE_FLOAT = 0x0003
_WAVE_ALAW = 0x0006
_WAVE_MULAW = 0x0007
_WAVE_EXTENSIBLE = 0xFFFE
#: Codes whose data is whole frames of ``block_align`` bytes, one per sample instant.
_FRAME_CODES = frozenset({_WAVE_PCM, _WAVE_FLOAT, _WAVE_ALAW, _WAVE_MULAW})
_UNKNOWN32 = 0xFFFFFFFF

#: AU encodings of fixed size: encoding -> bytes per sample.
_AU_BYTES = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}

_GSM_FRAME_BYTES = 33
_GSM_FRAME_SECONDS = 0.02


def probe_duration(name: str, head: bytes, size: int) -> float | None:
    """Return the duration in seconds from the media header, or None (see the module doc)."""
    try:
        seconds = _probe(name, head, size)
    except (struct.error, ValueError, OverflowError, ZeroDivisionError, IndexError):
        return None
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= _MAX_SECONDS:
        return None
    return round(seconds, 6)


def _probe(name: str, head: bytes, size: int) -> float | None:
    size = max(size, len(head))
    magic = head[:4]
    if magic in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return _wav(head, size)
    if magic == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff(head)
    if magic == b".snd":
        return _au(head, size)
    if magic == b"fLaC" or magic[:3] == b"ID3":
        return _flac(head)
    if PurePosixPath(name).suffix.lower() == ".gsm" and size and size % _GSM_FRAME_BYTES == 0:
        return size // _GSM_FRAME_BYTES * _GSM_FRAME_SECONDS
    return None


def _wav(head: bytes, size: int) -> float | None:
    endian = ">" if head[:4] == b"RIFX" else "<"
    rf64 = head[:4] == b"RF64"
    pos = 12
    fmt: tuple[int, int, int, int] | None = None  # code, sample rate, byte rate, block align
    fact_samples: int | None = None
    ds64_data: int | None = None
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(head):
            return None
        cid = head[pos : pos + 4]
        (length,) = struct.unpack_from(endian + "I", head, pos + 4)
        body = pos + 8
        if cid == b"ds64" and rf64 and body + 16 <= len(head):
            (ds64_data,) = struct.unpack_from("<Q", head, body + 8)
        elif cid == b"fmt " and body + 16 <= len(head):
            code, _channels, rate, byte_rate, align = struct.unpack_from(
                endian + "HHIIH", head, body
            )
            if code == _WAVE_EXTENSIBLE and length >= 40 and body + 26 <= len(head):
                (code,) = struct.unpack_from(endian + "H", head, body + 24)  # sub-format GUID
            fmt = (code, rate, byte_rate, align)
        elif cid == b"fact" and body + 4 <= len(head):
            (fact_samples,) = struct.unpack_from(endian + "I", head, body)
        elif cid == b"data":
            if fmt is None:
                return None
            available = size - body
            data = length
            if rf64 and length == _UNKNOWN32 and ds64_data is not None:
                data = ds64_data
            if data in (0, _UNKNOWN32) or data > available:
                data = available
            return _wav_seconds(fmt, fact_samples, data)
        pos = body + length + (length & 1)  # chunks are padded to an even length
    return None


def _wav_seconds(
    fmt: tuple[int, int, int, int], fact_samples: int | None, data: int
) -> float | None:
    code, rate, byte_rate, align = fmt
    if code in _FRAME_CODES:
        if rate and align:
            return (data // align) / rate
        return None
    if fact_samples and rate:
        return fact_samples / rate
    if byte_rate:
        return data / byte_rate
    return None


def _flac(head: bytes) -> float | None:
    pos = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        # ID3v2: 10-byte header whose size is four 7-bit bytes, plus a 10-byte footer if flagged.
        sz = head[6:10]
        if any(b & 0x80 for b in sz):
            return None
        tag = (sz[0] << 21) | (sz[1] << 14) | (sz[2] << 7) | sz[3]
        pos = 10 + tag + (10 if head[5] & 0x10 else 0)
    if head[pos : pos + 4] != b"fLaC":
        return None
    block = pos + 4
    if block + 4 + 18 > len(head) or head[block] & 0x7F != 0:  # STREAMINFO must come first
        return None
    info = head[block + 4 : block + 4 + 18]
    # Bits 80..: 20 bits sample rate, 3 channels-1, 5 bits-per-sample-1, 36 total samples.
    packed: int = struct.unpack(">Q", info[10:18])[0]
    rate = packed >> 44
    total = packed & ((1 << 36) - 1)
    if not rate or not total:
        return None
    return total / rate


def _aiff(head: bytes) -> float | None:
    pos = 12
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(head):
            return None
        cid = head[pos : pos + 4]
        (length,) = struct.unpack_from(">I", head, pos + 4)
        body = pos + 8
        if cid == b"COMM":
            if body + 18 > len(head):
                return None
            frames: int = struct.unpack_from(">hIh", head, body)[1]
            rate = _extended(head[body + 8 : body + 18])
            if rate is None or rate <= 0:
                return None
            return frames / rate
        pos = body + length + (length & 1)
    return None


def _extended(raw: bytes) -> float | None:
    """Decode an IEEE 754 80-bit extended float (AIFF's sample rate)."""
    exp_sign, mantissa = struct.unpack(">HQ", raw)
    exponent = exp_sign & 0x7FFF
    if exponent == 0x7FFF:
        return None  # infinity / NaN
    if exponent == 0 and mantissa == 0:
        return 0.0
    value = math.ldexp(mantissa, exponent - 16383 - 63)
    return -value if exp_sign & 0x8000 else value


def _au(head: bytes, size: int) -> float | None:
    if len(head) < 24:
        return None
    fields: tuple[int, ...] = struct.unpack_from(">IIIII", head, 4)
    offset, data, encoding, rate, channels = fields
    width = _AU_BYTES.get(encoding)
    if width is None or not rate or not channels or offset < 24:
        return None
    available = size - offset
    if data == _UNKNOWN32 or data > available:
        data = available
    if data < 0:
        return None
    return (data // (width * channels)) / rate
