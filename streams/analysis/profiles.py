"""Quality profiles: configuration a tenant changes without code.

A profile is a list of weighted parameters, each judged by one rule, plus assignment rules that
pick it for a conversation by channel, campaign or team (empty list = any). Profiles are tried in
order; the first that matches is used, else the built-in :data:`DEFAULT_PROFILE`. Changing a
profile means bumping its ``version``: results carry ``profile_id`` and ``profile_version``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DurationBounds(_Rule):
    """The conversation lasted between ``min_seconds`` and ``max_seconds``."""

    type: Literal["duration_bounds"] = "duration_bounds"
    min_seconds: float = Field(0, ge=0)
    max_seconds: float | None = Field(None, gt=0)


class MetadataComplete(_Rule):
    """Every listed Conversation field or metadata key is present and non-empty."""

    type: Literal["metadata_complete"] = "metadata_complete"
    fields: tuple[str, ...] = Field(min_length=1)


class PhrasePresent(_Rule):
    """A turn of ``speaker`` contains one of ``phrases`` (case-insensitive), optionally within
    the speaker's first ``within_turns`` turns (greeting) or last ones (closing)."""

    type: Literal["phrase_present"] = "phrase_present"
    speaker: Literal["agent", "customer"] = "agent"
    phrases: tuple[str, ...] = Field(min_length=1)
    within_turns: int | None = Field(None, ge=1)
    position: Literal["any", "first", "last"] = "any"


class PhraseAbsent(_Rule):
    """No turn of ``speaker`` contains any of ``phrases`` (forbidden phrases)."""

    type: Literal["phrase_absent"] = "phrase_absent"
    speaker: Literal["agent", "customer"] = "agent"
    phrases: tuple[str, ...] = Field(min_length=1)


class FirstResponseTime(_Rule):
    """The agent's first turn came at most ``max_seconds`` after the customer's first turn."""

    type: Literal["first_response_time"] = "first_response_time"
    max_seconds: float = Field(gt=0)


class LongestCustomerWait(_Rule):
    """No customer turn waited more than ``max_seconds`` for the next agent turn."""

    type: Literal["longest_customer_wait"] = "longest_customer_wait"
    max_seconds: float = Field(gt=0)


class CustomerSentiment(_Rule):
    """The customer's mean VADER compound sentiment is at least ``min_compound`` (-1..1).

    VADER ships its lexicon inside its wheel (no download at run time), is rule-based and fast
    (no model to load), and is tuned for short conversational text such as chat turns.
    """

    type: Literal["customer_sentiment"] = "customer_sentiment"
    min_compound: float = Field(-0.05, ge=-1, le=1)


class MaxSilenceSeconds(_Rule):
    """No silence of the recording (nobody speaking) lasted more than ``max_seconds``."""

    type: Literal["max_silence_seconds"] = "max_silence_seconds"
    max_seconds: float = Field(gt=0)


class MaxSilenceShare(_Rule):
    """Silence was at most ``max_share`` (0-1) of the recording."""

    type: Literal["max_silence_share"] = "max_silence_share"
    max_share: float = Field(gt=0, le=1)


class TalkListenRatio(_Rule):
    """Agent talk / customer talk lies between ``min_ratio`` and ``max_ratio`` (stereo)."""

    type: Literal["talk_listen_ratio"] = "talk_listen_ratio"
    min_ratio: float = Field(0, ge=0)
    max_ratio: float | None = Field(None, gt=0)


class MaxOvertalkSeconds(_Rule):
    """Both sides spoke at once for at most ``max_seconds`` in total (stereo)."""

    type: Literal["max_overtalk_seconds"] = "max_overtalk_seconds"
    max_seconds: float = Field(ge=0)


Rule = Annotated[
    DurationBounds
    | MetadataComplete
    | PhrasePresent
    | PhraseAbsent
    | FirstResponseTime
    | LongestCustomerWait
    | CustomerSentiment
    | MaxSilenceSeconds
    | MaxSilenceShare
    | TalkListenRatio
    | MaxOvertalkSeconds,
    Field(discriminator="type"),
]


class Parameter(BaseModel):
    """One scored item of a profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = ""
    weight: float = Field(1.0, gt=0)
    rule: Rule


class Assignment(BaseModel):
    """Which conversations a profile applies to; an empty list matches anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[Literal["voice", "chat", "email", "social"], ...] = ()
    campaigns: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


class Profile(BaseModel):
    """A versioned quality profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    version: int = Field(1, ge=1)
    pass_score: float = Field(70.0, ge=0, le=100)
    assign: Assignment = Field(default_factory=Assignment)
    parameters: tuple[Parameter, ...] = Field(
        min_length=1, max_length=100, description="At most 100, so every result fits one record."
    )


DEFAULT_PROFILE = Profile(
    id="default",
    version=1,
    parameters=(
        Parameter(
            id="metadata",
            name="Agent, team and campaign recorded",
            rule=MetadataComplete(fields=("agent_id", "team", "campaign")),
        ),
        Parameter(
            id="duration",
            name="Lasted between 10 s and 1 h",
            rule=DurationBounds(min_seconds=10, max_seconds=3600),
        ),
        Parameter(
            id="greeting",
            name="Agent greets the customer",
            weight=2,
            rule=PhrasePresent(
                speaker="agent",
                phrases=("hello", "hi ", "good morning", "good afternoon", "thank you for"),
                within_turns=2,
                position="first",
            ),
        ),
        Parameter(
            id="closing",
            name="Agent offers more help before closing",
            rule=PhrasePresent(
                speaker="agent",
                phrases=("anything else", "have a great day", "have a nice day"),
                within_turns=2,
                position="last",
            ),
        ),
        Parameter(
            id="courtesy",
            name="No forbidden phrases",
            weight=2,
            rule=PhraseAbsent(speaker="agent", phrases=("calm down", "not my problem", "shut up")),
        ),
        Parameter(
            id="first-response",
            name="Agent answers within 60 s",
            rule=FirstResponseTime(max_seconds=60),
        ),
        Parameter(
            id="customer-wait",
            name="Customer never waits more than 3 min",
            rule=LongestCustomerWait(max_seconds=180),
        ),
        Parameter(
            id="sentiment",
            name="Customer sentiment not negative",
            rule=CustomerSentiment(min_compound=-0.05),
        ),
    ),
)


def matches(profile: Profile, conversation: dict[str, object]) -> bool:
    """Tell whether the profile's assignment rules select this conversation."""
    a = profile.assign
    return (
        (not a.channels or conversation.get("channel") in a.channels)
        and (not a.campaigns or conversation.get("campaign") in a.campaigns)
        and (not a.teams or conversation.get("team") in a.teams)
    )


def select_profile(profiles: tuple[Profile, ...], conversation: dict[str, object]) -> Profile:
    """Return the first matching profile, else the built-in default."""
    for profile in profiles:
        if matches(profile, conversation):
            return profile
    return DEFAULT_PROFILE
