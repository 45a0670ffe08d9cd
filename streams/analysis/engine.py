"""Score a conversation against a profile: per-parameter scores with evidence, weighted total.

Contract: :func:`analyse` is pure and deterministic for a given conversation and profile
(``analysed_at`` aside). A parameter whose rule has nothing to judge (no transcript for a phrase
rule, neither ``duration_ms`` nor an end time for a duration) is reported with
``applicable=False`` and left out of the weighted score; if nothing is applicable the score is
0 and the result fails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from streams.analysis.profiles import (
    CustomerSentiment,
    DurationBounds,
    FirstResponseTime,
    LongestCustomerWait,
    MaxOvertalkSeconds,
    MaxSilenceSeconds,
    MaxSilenceShare,
    MetadataComplete,
    Parameter,
    PhraseAbsent,
    PhrasePresent,
    Profile,
    TalkListenRatio,
)
from streams.avrowrite import FrozenRecord

EXCERPT = 160
#: Evidence items kept per parameter: with at most 100 parameters a result stays far below the
#: record limit, whatever the conversation holds.
MAX_EVIDENCE = 10


@dataclass
class Judgement:
    """The outcome of one rule."""

    score: float
    passed: bool
    applicable: bool = True
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: Set when the only evidence is this text (no turn, time or excerpt): the parameter's
    #: record is then the same for every conversation judged so, and shared (see analyse).
    plain: str | None = None


@lru_cache(maxsize=1)
def _vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def _evidence(
    detail: str,
    turn: int | None = None,
    speaker: str | None = None,
    text: str | None = None,
    at_seconds: float | None = None,
) -> dict[str, Any]:
    return {
        "detail": detail,
        "turn_index": turn,
        "speaker": speaker,
        "excerpt": text[:EXCERPT] if text is not None else None,
        "at_seconds": at_seconds,
    }


def _said(detail: str, index: int, turn: dict[str, Any], conv: dict[str, Any]) -> dict[str, Any]:
    """Evidence pointing at turn ``index``: its speaker, excerpt, and its offset from the start
    of the conversation when the turn is timed (transcripts, timed chats)."""
    at, start = turn.get("at"), conv.get("started_at")
    offset = (at - start).total_seconds() if at is not None and start is not None else None
    return _evidence(detail, index, turn["speaker"], turn["text"], offset)


VoiceRule = MaxSilenceSeconds | MaxSilenceShare | TalkListenRatio | MaxOvertalkSeconds


def _judge_voice(rule: VoiceRule, voice: dict[str, Any] | None) -> Judgement:
    """Judge a voice rule from the conversation's VoiceMetrics (not applicable without them,
    or for stereo-only rules on a mono recording)."""
    if not voice or voice.get("status") != "analysed":
        why = voice.get("status") if voice else "no voice metrics"
        return _na(f"recording not analysed ({why})")
    if isinstance(rule, MaxSilenceSeconds):
        longest = voice["longest_silence_seconds"]
        at = voice["longest_silence_at_seconds"]
        detail = f"longest silence {longest:g} s (max {rule.max_seconds:g} s)"
        return _verdict(longest <= rule.max_seconds, [_evidence(detail, at_seconds=at)])
    if isinstance(rule, MaxSilenceShare):
        share = voice["silence_share"]
        detail = f"silence {share:.1%} of the call (max {rule.max_share:.1%})"
        return _plain_verdict(share <= rule.max_share, detail)
    if isinstance(rule, TalkListenRatio):
        ratio = voice["talk_listen_ratio"]
        if ratio is None:
            return _na("no talk/listen ratio (mono recording or silent customer)")
        ok = ratio >= rule.min_ratio and (rule.max_ratio is None or ratio <= rule.max_ratio)
        return _plain_verdict(ok, f"agent talk / customer talk {ratio:g}")
    over = voice["overtalk_seconds"]
    if over is None:
        return _na("no overtalk measure (mono recording)")
    detail = f"overtalk {over:g} s (max {rule.max_seconds:g} s)"
    return _verdict(
        over <= rule.max_seconds, [_evidence(detail, at_seconds=voice["overtalk_at_seconds"])]
    )


def _verdict(ok: bool, evidence: list[dict[str, Any]]) -> Judgement:
    return Judgement(100.0 if ok else 0.0, ok, True, evidence)


def _plain_verdict(ok: bool, detail: str) -> Judgement:
    """A verdict whose only evidence is ``detail``."""
    return Judgement(100.0 if ok else 0.0, ok, True, [_evidence(detail)], detail)


def _na(detail: str) -> Judgement:
    return Judgement(0.0, True, False, [_evidence(detail)], detail)


def _seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


def judge(rule: Any, conv: dict[str, Any]) -> Judgement:
    """Apply one rule to a conversation."""
    turns: list[dict[str, Any]] = conv.get("turns") or []
    if isinstance(rule, DurationBounds):
        if conv.get("duration_ms") is not None:
            secs = conv["duration_ms"] / 1000  # a recording's own length beats the timestamps
        elif conv.get("ended_at") is None:
            return _na("no end time")
        else:
            secs = _seconds(conv["started_at"], conv["ended_at"])
        ok = secs >= rule.min_seconds and (rule.max_seconds is None or secs <= rule.max_seconds)
        return _plain_verdict(ok, f"lasted {secs:.0f} s")
    if isinstance(rule, MetadataComplete):
        missing = [
            f for f in rule.fields if not (conv.get(f) or (conv.get("metadata") or {}).get(f))
        ]
        detail = f"missing: {', '.join(missing)}" if missing else "all present"
        return _plain_verdict(not missing, detail)
    if isinstance(rule, PhrasePresent | PhraseAbsent):
        own = [(i, t) for i, t in enumerate(turns) if t["speaker"] == rule.speaker]
        if not own:
            return _na(f"no {rule.speaker} turns")
        if isinstance(rule, PhrasePresent) and rule.within_turns:
            own = own[: rule.within_turns] if rule.position != "last" else own[-rule.within_turns :]
        hits = [(i, t, p) for i, t in own for p in rule.phrases if p.lower() in t["text"].lower()]
        evidence = [_said(f"matched {p!r}", i, t, conv) for i, t, p in hits]
        present = isinstance(rule, PhrasePresent)  # a hit passes it; for PhraseAbsent, fails
        if not hits:
            none = "no matching phrase" if present else "no forbidden phrase"
            return _plain_verdict(not present, none)
        return _verdict(present, evidence)
    if isinstance(rule, FirstResponseTime | LongestCustomerWait):
        timed = [(i, t) for i, t in enumerate(turns) if t.get("at") is not None]
        if not any(t["speaker"] == "customer" for _, t in timed):
            return _na("no timed customer turns")
        if isinstance(rule, FirstResponseTime):
            first_c = next((i, t) for i, t in timed if t["speaker"] == "customer")
            reply = next(
                (
                    (i, t)
                    for i, t in timed
                    if t["speaker"] == "agent" and t["at"] >= first_c[1]["at"]
                ),
                None,
            )
            if reply is None:
                return _verdict(
                    False,
                    [_said("the agent never answered", first_c[0], first_c[1], conv)],
                )
            secs = _seconds(first_c[1]["at"], reply[1]["at"])
            return _verdict(
                secs <= rule.max_seconds,
                [_said(f"first agent reply after {secs:.0f} s", reply[0], reply[1], conv)],
            )
        worst, worst_at = 0.0, None
        waiting: tuple[int, dict[str, Any]] | None = None
        for i, t in timed:
            if t["speaker"] == "customer" and waiting is None:
                waiting = (i, t)
            elif t["speaker"] == "agent" and waiting is not None:
                secs = _seconds(waiting[1]["at"], t["at"])
                if secs > worst:
                    worst, worst_at = secs, waiting
                waiting = None
        evidence = (
            [_said(f"longest wait {worst:.0f} s", worst_at[0], worst_at[1], conv)]
            if worst_at
            else [_evidence("no customer wait")]
        )
        return _verdict(worst <= rule.max_seconds, evidence)
    if isinstance(rule, CustomerSentiment):
        said = [(i, t) for i, t in enumerate(turns) if t["speaker"] == "customer"]
        if not said:
            return _na("no customer turns")
        scores = [(_vader().polarity_scores(t["text"])["compound"], i, t) for i, t in said]
        mean = sum(s for s, _, _ in scores) / len(scores)
        low = min(scores, key=lambda s: s[0])
        evidence = [
            _evidence(f"mean compound {mean:+.2f}"),
            _said(f"most negative turn {low[0]:+.2f}", low[1], low[2], conv),
        ]
        return Judgement(round((mean + 1) * 50, 2), mean >= rule.min_compound, True, evidence)
    if isinstance(rule, VoiceRule):
        return _judge_voice(rule, conv.get("voice"))
    raise TypeError(f"unknown rule {type(rule).__name__}")


def score_parameters(profile: Profile, conv: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """Return the weighted overall score and the per-parameter results."""
    results = []
    total = weights = 0.0
    for p in profile.parameters:
        j = judge(p.rule, conv)
        results.append(_parameter_record(p, j) if j.plain is None else _shared_record(p, j))
        if j.applicable:
            total += j.score * p.weight
            weights += p.weight
    return (round(total / weights, 2) if weights else 0.0), results


def _parameter_record(p: Parameter, j: Judgement) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name or p.id,
        "rule": p.rule.type,
        "weight": p.weight,
        "score": j.score,
        "passed": j.passed,
        "applicable": j.applicable,
        "evidence": j.evidence[:MAX_EVIDENCE],
    }


#: Parameter records of plain judgements by content (see _shared_record); emptied when full.
_SHARED: dict[tuple[Any, ...], FrozenRecord] = {}
_SHARED_MAX = 4096


def _shared_record(p: Parameter, j: Judgement) -> FrozenRecord:
    """The record of a plain judgement (its only evidence is ``j.plain``): one frozen record per
    content, shared by every result with that content, so the Avro writer encodes it once
    (:class:`~streams.avrowrite.FrozenRecord`). The key holds every value the record holds."""
    key = (p.id, p.name, p.rule.type, p.weight, j.score, j.passed, j.applicable, j.plain)
    record = _SHARED.get(key)
    if record is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        plain = _parameter_record(p, j)
        plain["evidence"] = tuple(FrozenRecord(e) for e in plain["evidence"])
        record = _SHARED[key] = FrozenRecord(plain)
    return record


def analyse(profile: Profile, conv: dict[str, Any]) -> dict[str, Any]:
    """Return the analysis fields of an AnalysisResult (score, passed, parameters, and the
    conversation's redaction counts). Parameter records may be shared between results (frozen:
    a change raises TypeError)."""
    overall, parameters = score_parameters(profile, conv)
    applicable = any(p["applicable"] for p in parameters)
    return {
        "profile_id": profile.id,
        "profile_version": profile.version,
        "overall_score": overall,
        "passed": applicable and overall >= profile.pass_score,
        "parameters": parameters,
        "redactions": dict(conv.get("redactions") or {}),
        "voice": conv.get("voice"),
        "transcript": conv.get("transcript"),
    }
