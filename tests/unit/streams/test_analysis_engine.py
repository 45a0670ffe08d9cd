"""The analysis engine: every rule type, evidence, weights, pass score, the default profile."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

import streams.demo
from streams.analysis.engine import EXCERPT, analyse, judge, score_parameters
from streams.analysis.profiles import (
    DEFAULT_PROFILE,
    CustomerSentiment,
    DurationBounds,
    FirstResponseTime,
    LongestCustomerWait,
    MetadataComplete,
    Parameter,
    PhraseAbsent,
    PhrasePresent,
    Profile,
)
from streams.avrowrite import FrozenRecord
from streams.ingest.parse import ParseSettings, parse

T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
DEMO = Path(streams.demo.__file__).parent / "files"


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def turn(speaker: str, text: str, seconds: float | None = None) -> dict[str, Any]:
    """One transcript turn, timed ``seconds`` after T0 (or untimed)."""
    return {"speaker": speaker, "at": None if seconds is None else at(seconds), "text": text}


def conversation(**fields: Any) -> dict[str, Any]:
    """A voice conversation of 60 s without a transcript, with ``fields`` changed."""
    conv: dict[str, Any] = {
        "external_interaction_id": "CALL-1",
        "channel": "voice",
        "started_at": T0,
        "ended_at": at(60),
        "agent_id": "a-1",
        "team": "Billing",
        "campaign": None,
        "turns": [],
        "metadata": {},
    }
    conv.update(fields)
    return conv


def profile(*rules: Any, weights: tuple[float, ...] = (), pass_score: float = 70) -> Profile:
    """A profile with one parameter per rule, ids p0, p1, ..."""
    params = tuple(
        Parameter(id=f"p{i}", rule=rule, weight=weights[i] if weights else 1.0)
        for i, rule in enumerate(rules)
    )
    return Profile(id="test", pass_score=pass_score, parameters=params)


def details(evidence: list[dict[str, Any]]) -> list[str]:
    return [e["detail"] for e in evidence]


# -- duration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "passed"),
    [(9, False), (10, True), (3600, True), (3601, False)],
)
def test_duration_bounds_are_inclusive(seconds: int, passed: bool) -> None:
    j = judge(DurationBounds(min_seconds=10, max_seconds=3600), conversation(ended_at=at(seconds)))
    assert (j.applicable, j.passed, j.score) == (True, passed, 100.0 if passed else 0.0)
    assert details(j.evidence) == [f"lasted {seconds} s"]


def test_duration_without_maximum_only_checks_minimum() -> None:
    j = judge(DurationBounds(min_seconds=10), conversation(ended_at=at(86_400)))
    assert j.passed


def test_duration_without_end_time_is_not_applicable() -> None:
    j = judge(DurationBounds(min_seconds=10), conversation(ended_at=None))
    assert (j.applicable, j.score) == (False, 0.0)
    assert details(j.evidence) == ["no end time"]


# -- metadata ------------------------------------------------------------------------------------


def test_metadata_complete_reads_fields_and_metadata_keys() -> None:
    rule = MetadataComplete(fields=("agent_id", "disposition"))
    j = judge(rule, conversation(metadata={"disposition": "resolved"}))
    assert (j.passed, j.score) == (True, 100.0)
    assert details(j.evidence) == ["all present"]


def test_metadata_complete_names_every_missing_or_empty_field() -> None:
    rule = MetadataComplete(fields=("agent_id", "campaign", "disposition"))
    j = judge(rule, conversation(agent_id="", metadata={"disposition": ""}))
    assert (j.applicable, j.passed, j.score) == (True, False, 0.0)
    assert details(j.evidence) == ["missing: agent_id, campaign, disposition"]


# -- phrases -------------------------------------------------------------------------------------

CHAT = [
    turn("customer", "Hi, my router keeps dropping.", 0),
    turn("agent", "Good MORNING, thank you for calling!", 20),
    turn("customer", "It drops every hour.", 30),
    turn("agent", "Let me check your line.", 50),
    turn("agent", "Done. Is there anything else?", 400),
]


def test_phrase_present_is_case_insensitive_and_points_at_the_turn() -> None:
    j = judge(PhrasePresent(phrases=("good morning",)), conversation(turns=CHAT))
    assert (j.passed, j.score) == (True, 100.0)
    assert j.evidence == [
        {
            "detail": "matched 'good morning'",
            "turn_index": 1,
            "speaker": "agent",
            "excerpt": "Good MORNING, thank you for calling!",
            "at_seconds": 20.0,  # the turn's offset from the start of the conversation
        }
    ]


def test_phrase_present_lists_every_matching_phrase() -> None:
    j = judge(PhrasePresent(phrases=("thank you", "calling", "check")), conversation(turns=CHAT))
    assert [(e["detail"], e["turn_index"]) for e in j.evidence] == [
        ("matched 'thank you'", 1),
        ("matched 'calling'", 1),
        ("matched 'check'", 3),
    ]


@pytest.mark.parametrize(
    ("position", "within", "phrase", "passed"),
    [
        ("first", 1, "good morning", True),  # the agent's first turn
        ("first", 1, "check", False),  # the agent's second turn: outside
        ("first", 2, "check", True),
        ("any", 1, "anything else", False),  # within_turns counts from the first turn
        ("last", 1, "anything else", True),  # the agent's last turn
        ("last", 1, "check", False),
        ("last", 2, "check", True),
        ("any", None, "anything else", True),
    ],
)
def test_phrase_present_within_first_or_last_turns(
    position: str, within: int | None, phrase: str, passed: bool
) -> None:
    rule = PhrasePresent(phrases=(phrase,), within_turns=within, position=position)
    j = judge(rule, conversation(turns=CHAT))
    assert j.passed is passed
    if passed:  # evidence points at the turn in the whole transcript
        assert j.evidence[0]["turn_index"] == next(
            i for i, t in enumerate(CHAT) if phrase in t["text"].lower()
        )
    else:
        assert details(j.evidence) == ["no matching phrase"]


def test_phrase_rules_look_only_at_their_speaker() -> None:
    j = judge(PhrasePresent(speaker="customer", phrases=("thank you",)), conversation(turns=CHAT))
    assert not j.passed
    j = judge(PhrasePresent(speaker="customer", phrases=("router",)), conversation(turns=CHAT))
    assert j.passed and j.evidence[0]["turn_index"] == 0


def test_phrase_evidence_excerpt_is_capped() -> None:
    long = "hello " + "x" * 1000
    j = judge(PhrasePresent(phrases=("hello",)), conversation(turns=[turn("agent", long)]))
    assert j.evidence[0]["excerpt"] == long[:EXCERPT]


@pytest.mark.parametrize("rule_type", [PhrasePresent, PhraseAbsent])
def test_phrase_rules_without_turns_of_the_speaker_are_not_applicable(rule_type: Any) -> None:
    only_customer = conversation(turns=[turn("customer", "hello?")])
    for conv in (conversation(), only_customer):
        j = judge(rule_type(phrases=("hello",)), conv)
        assert (j.applicable, j.score) == (False, 0.0)
        assert details(j.evidence) == ["no agent turns"]


def test_phrase_absent_fails_with_the_offending_turn() -> None:
    turns = [turn("agent", "Hello"), turn("customer", "calm down!"), turn("agent", "Calm down.")]
    j = judge(PhraseAbsent(phrases=("calm down", "shut up")), conversation(turns=turns))
    assert (j.passed, j.score) == (False, 0.0)
    assert [(e["detail"], e["turn_index"]) for e in j.evidence] == [("matched 'calm down'", 2)]


def test_phrase_absent_passes_when_no_phrase_is_said() -> None:
    j = judge(PhraseAbsent(phrases=("shut up",)), conversation(turns=CHAT))
    assert (j.passed, j.score) == (True, 100.0)
    assert details(j.evidence) == ["no forbidden phrase"]


# -- response times ------------------------------------------------------------------------------


def test_first_response_time_measures_from_the_first_customer_turn() -> None:
    turns = [
        turn("agent", "Welcome, leave a message.", 0),  # before the customer: not a reply
        turn("customer", "Hello?", 10),
        turn("agent", "Hi!", 55),
    ]
    j = judge(FirstResponseTime(max_seconds=45), conversation(turns=turns))
    assert (j.passed, j.score) == (True, 100.0)
    assert j.evidence == [
        {"detail": "first agent reply after 45 s", "turn_index": 2, "speaker": "agent",
         "excerpt": "Hi!", "at_seconds": 55.0}
    ]  # fmt: skip
    assert not judge(FirstResponseTime(max_seconds=44), conversation(turns=turns)).passed


def test_first_response_time_fails_when_the_agent_never_answers() -> None:
    turns = [turn("agent", "Welcome", 0), turn("customer", "Hello?", 10), turn("agent", "Hi")]
    j = judge(FirstResponseTime(max_seconds=60), conversation(turns=turns))
    assert (j.applicable, j.passed, j.score) == (True, False, 0.0)
    assert [(e["detail"], e["turn_index"]) for e in j.evidence] == [("the agent never answered", 1)]


@pytest.mark.parametrize(
    "rule", [FirstResponseTime(max_seconds=60), LongestCustomerWait(max_seconds=60)]
)
def test_response_rules_without_timed_customer_turns_are_not_applicable(rule: Any) -> None:
    untimed = [turn("customer", "Hello?"), turn("agent", "Hi", 5)]
    for conv in (conversation(), conversation(turns=untimed)):
        j = judge(rule, conv)
        assert (j.applicable, j.score) == (False, 0.0)
        assert details(j.evidence) == ["no timed customer turns"]


def test_longest_customer_wait_reports_the_worst_wait() -> None:
    # waits: 20 s (turn 0 -> 1), then turn 2 waits 350 s through turn 3 (customer again) to 4
    turns = [*CHAT[:3], turn("customer", "Hello??", 100), turn("agent", "Sorry", 380)]
    j = judge(LongestCustomerWait(max_seconds=300), conversation(turns=turns))
    assert (j.passed, j.score) == (False, 0.0)
    assert [(e["detail"], e["turn_index"], e["excerpt"]) for e in j.evidence] == [
        ("longest wait 350 s", 2, "It drops every hour.")
    ]
    assert judge(LongestCustomerWait(max_seconds=350), conversation(turns=turns)).passed


def test_longest_customer_wait_without_an_agent_answer() -> None:
    j = judge(LongestCustomerWait(max_seconds=1), conversation(turns=[turn("customer", "?", 0)]))
    assert (j.applicable, j.passed) == (True, True)
    assert details(j.evidence) == ["no customer wait"]


# -- sentiment -----------------------------------------------------------------------------------


def test_customer_sentiment_scores_the_mean_and_points_at_the_worst_turn() -> None:
    texts = ["ok thanks", "This is terrible and I hate it.", "Still broken. Useless."]
    turns = [
        turn("customer", texts[0]),
        turn("agent", "Wonderful, great, excellent!"),  # not the customer: ignored
        turn("customer", texts[1]),
        turn("customer", texts[2]),
    ]
    vader = SentimentIntensityAnalyzer()
    mean = sum(vader.polarity_scores(t)["compound"] for t in texts) / 3
    j = judge(CustomerSentiment(min_compound=-0.05), conversation(turns=turns))
    assert mean < -0.05
    assert (j.applicable, j.passed, j.score) == (True, False, round((mean + 1) * 50, 2))
    assert j.evidence[0]["detail"] == f"mean compound {mean:+.2f}"
    assert (j.evidence[1]["turn_index"], j.evidence[1]["excerpt"]) == (2, texts[1])
    happy = judge(CustomerSentiment(min_compound=0.5), conversation(turns=turns[:1]))
    assert happy.passed and happy.score > 75


def test_customer_sentiment_without_customer_turns_is_not_applicable() -> None:
    j = judge(CustomerSentiment(), conversation(turns=[turn("agent", "Hello")]))
    assert (j.applicable, j.score) == (False, 0.0)
    assert details(j.evidence) == ["no customer turns"]


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown rule"):
        judge(object(), conversation())


# -- weights, pass score, profiles ---------------------------------------------------------------

PASS = MetadataComplete(fields=("agent_id",))
FAIL = MetadataComplete(fields=("campaign",))
NOT_APPLICABLE = CustomerSentiment()


def test_overall_score_is_the_weighted_mean_of_applicable_parameters() -> None:
    prof = profile(PASS, FAIL, NOT_APPLICABLE, weights=(3, 1, 100))
    overall, params = score_parameters(prof, conversation())
    assert overall == 75.0
    assert [(p["id"], p["weight"], p["score"], p["applicable"]) for p in params] == [
        ("p0", 3, 100.0, True),
        ("p1", 1, 0.0, True),
        ("p2", 100, 0.0, False),
    ]


def test_parameter_records_carry_name_rule_and_evidence() -> None:
    prof = Profile(
        id="test",
        parameters=(
            Parameter(id="meta", name="Agent recorded", rule=PASS),
            Parameter(id="x", rule=FAIL),
        ),
    )
    _, params = score_parameters(prof, conversation())
    assert params[0] == {
        "id": "meta",
        "name": "Agent recorded",
        "rule": "metadata_complete",
        "weight": 1.0,
        "score": 100.0,
        "passed": True,
        "applicable": True,
        "evidence": (
            {
                "detail": "all present",
                "turn_index": None,
                "speaker": None,
                "excerpt": None,
                "at_seconds": None,
            },
        ),
    }
    assert params[1]["name"] == "x"  # no name: the id


def test_a_plain_verdict_is_one_frozen_record_shared_by_every_result() -> None:
    """Plain evidence only (no turn, time or excerpt): every conversation judged so gets the
    same record, which cannot change, so the Avro writer encodes it once."""
    prof = Profile(id="test", parameters=(Parameter(id="meta", rule=PASS),))
    first = score_parameters(prof, conversation())[1][0]
    again = score_parameters(prof, conversation(external_interaction_id="other"))[1][0]
    assert first is again and isinstance(first, FrozenRecord)
    with pytest.raises(TypeError):
        first["score"] = 0.0
    with pytest.raises(TypeError):
        first["evidence"][0]["detail"] = "changed"  # type: ignore[index]


@pytest.mark.parametrize(("pass_score", "passed"), [(74.99, True), (75, True), (75.01, False)])
def test_pass_score_is_inclusive(pass_score: float, passed: bool) -> None:
    result = analyse(profile(PASS, FAIL, weights=(3, 1), pass_score=pass_score), conversation())
    assert (result["overall_score"], result["passed"]) == (75.0, passed)
    assert (result["profile_id"], result["profile_version"]) == ("test", 1)


def test_nothing_applicable_scores_zero_and_fails_even_with_pass_score_zero() -> None:
    result = analyse(
        profile(NOT_APPLICABLE, DurationBounds(), pass_score=0), conversation(ended_at=None)
    )
    assert (result["overall_score"], result["passed"]) == (0.0, False)
    assert not any(p["applicable"] for p in result["parameters"])


def test_overall_score_is_rounded_to_two_decimals() -> None:
    result = analyse(profile(PASS, FAIL, FAIL), conversation())
    assert result["overall_score"] == 33.33


def test_analysis_is_deterministic() -> None:
    conv = conversation(turns=CHAT)
    assert analyse(DEFAULT_PROFILE, conv) == analyse(DEFAULT_PROFILE, conv)


def _demo(path: str) -> list[dict[str, Any]]:
    with (DEMO / path).open("rb") as f:
        rows = list(parse(io.BytesIO(f.read()), path, ParseSettings()))
    return [r.conversation for r in rows if r.conversation is not None]


def test_default_profile_scores_the_quickstart_files_as_the_readme_shows() -> None:
    chat = _demo("chats/CHAT-2001.json")[0]
    result = analyse(DEFAULT_PROFILE, chat)
    assert (f"{result['overall_score']:.1f}", result["passed"]) == ("87.0", True)
    calls = {c["external_interaction_id"]: c for c in _demo("2026-11-20_conversations.csv")}
    result = analyse(DEFAULT_PROFILE, calls["CALL-1003"])  # no campaign, no transcript
    assert (f"{result['overall_score']:.1f}", result["passed"]) == ("50.0", False)
    applicable = [p["id"] for p in result["parameters"] if p["applicable"]]
    assert applicable == ["metadata", "duration"]
