"""Voice metrics from per-frame speech flags (pure; no audio, no I/O).

Contract of :func:`voice_metrics`: ``agent`` and ``customer`` are speech flags (truthy = speech)
of consecutive frames of ``frame_ms`` each, of the same length; ``customer`` is None for a mono
recording (speakers not told apart: only ``talk_seconds`` and the silences are set). Each
channel is first smoothed with :func:`bridge` (a pause shorter than ``hangover_ms`` between
speech is speech, so word gaps are not silences). Then: talk per speaker, talk of anyone,
silence = frames where nobody speaks (share of the duration, the longest run and where it
starts), holds = silences of at least ``hold_threshold_seconds``, overtalk = frames where both
speak (total and where the longest run starts), talk/listen ratio = agent talk / customer talk
(None when the customer never speaks). Seconds are rounded to milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def bridge(flags: Sequence[int], max_gap: int) -> bytearray:
    """Return ``flags`` as 0/1 with every run of 0s shorter than ``max_gap`` frames that lies
    between two speech frames set to 1."""
    out = bytearray(1 if f else 0 for f in flags)
    last = -1  # index of the last speech frame
    for i, f in enumerate(out):
        if f:
            if last >= 0 and 0 < i - last - 1 < max_gap:
                out[last + 1 : i] = b"\x01" * (i - last - 1)
            last = i
    return out


def runs(flags: Sequence[int], value: int) -> list[tuple[int, int]]:
    """Return ``(start, length)`` of every run of frames equal to ``value``."""
    found: list[tuple[int, int]] = []
    start = None
    for i, f in enumerate(flags):
        if f == value and start is None:
            start = i
        elif f != value and start is not None:
            found.append((start, i - start))
            start = None
    if start is not None:
        found.append((start, len(flags) - start))
    return found


def voice_metrics(
    agent: Sequence[int],
    customer: Sequence[int] | None,
    *,
    frame_ms: int,
    hold_threshold_seconds: float,
    hangover_ms: int,
) -> dict[str, Any]:
    """Return the ``analysed`` VoiceMetrics record (see the module doc)."""
    if customer is not None and len(customer) != len(agent):
        raise ValueError("agent and customer flags differ in length")
    step = frame_ms / 1000
    gap = hangover_ms // frame_ms
    a = bridge(agent, gap)
    c = bridge(customer, gap) if customer is not None else None
    anyone = bytes(x | y for x, y in zip(a, c, strict=True)) if c is not None else bytes(a)
    silences = runs(anyone, 0)
    longest = max(silences, key=lambda r: r[1], default=None)
    holds = [r for r in silences if r[1] * step >= hold_threshold_seconds]
    n = len(a)

    def secs(frames: int) -> float:
        return round(frames * step, 3)

    silence = sum(r[1] for r in silences)
    record: dict[str, Any] = {
        "status": "analysed",
        "reason": None,
        "channels": 1 if c is None else 2,
        "duration_seconds": secs(n),
        "talk_seconds": secs(n - silence),
        "agent_talk_seconds": None,
        "customer_talk_seconds": None,
        "silence_seconds": secs(silence),
        "silence_share": round(silence / n, 4) if n else 0.0,
        "longest_silence_seconds": secs(longest[1]) if longest else 0.0,
        "longest_silence_at_seconds": secs(longest[0]) if longest else None,
        "holds": len(holds),
        "overtalk_seconds": None,
        "overtalk_at_seconds": None,
        "talk_listen_ratio": None,
    }
    if c is not None:
        both = bytes(x & y for x, y in zip(a, c, strict=True))
        over = max(runs(both, 1), key=lambda r: r[1], default=None)
        agent_talk, customer_talk = sum(a), sum(c)
        record.update(
            agent_talk_seconds=secs(agent_talk),
            customer_talk_seconds=secs(customer_talk),
            overtalk_seconds=secs(sum(both)),
            overtalk_at_seconds=secs(over[0]) if over else None,
            talk_listen_ratio=round(agent_talk / customer_talk, 3) if customer_talk else None,
        )
    return record


def failed(reason: str, message: str) -> dict[str, Any]:
    """Return the VoiceMetrics record of a recording that could not be analysed."""
    return {"status": reason, "reason": message}
