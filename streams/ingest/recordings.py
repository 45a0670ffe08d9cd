"""Connector setting ``recordings``: how recordings and their metadata files become one call.

Seed 003: a recording named after its call (``yyyyMMdd-hhmmss_uid.ext``) comes with exactly one
flat metadata file. Three ways to tell which metadata belongs to which recording (``mode``):

- ``paired`` (default): same stem, metadata extension (``20201012-140253_joe_baducci.wav`` and
  ``20201012-140253_joe_baducci.xml``); the stem is the call's key;
- ``by_id``: metadata ``<id>.<ext>`` for recordings that come from another source named by
  ``id_pattern`` (``ringcentral_BXyT30eVTWIZjUA.wav`` and ``BXyT30eVTWIZjUA.xml``); the id is the
  call's key and the metadata opens the case on its own;
- ``matched``: the source generates no ids; metadata is matched to a recording by user id, call
  time (within ``call_time_tolerance_seconds``), ANI and DNIS; ambiguous matches are reported,
  never guessed.

The engine that applies these rules is :mod:`streams.ingest.bundles`.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.clock import known_zone
from streams.ingest.metadata import MetadataLimits
from streams.ingest.recnames import DEFAULT_PATTERN, NamePattern

MatchField = Literal["uid", "call_time", "ani", "dnis"]
MATCH_FIELDS: tuple[MatchField, ...] = ("uid", "call_time", "ani", "dnis")


class MetadataKeys(BaseModel):
    """Which metadata keys carry the fields a recording's name carries (matched mode, and the
    call time of metadata that arrives without its recording)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: str = Field("uid", min_length=1, description="Key of the user id.", examples=["agent"])
    call_time: str = Field(
        "call_time",
        min_length=1,
        description="Key of the call time (ISO 8601 or epoch seconds; without an offset it is "
        "read in ``timezone``).",
        examples=["start_time"],
    )
    ani: str = Field("ani", min_length=1, description="Key of the customer number (ANI).")
    dnis: str = Field("dnis", min_length=1, description="Key of the dialled number (DNIS).")


class RecordingSettings(BaseModel):
    """Recording + metadata bundles of one connector (see the module doc). Unset: recordings
    are only copied to the media store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["paired", "by_id", "matched"] = Field(
        "paired", description="How metadata is tied to its recording (see the module doc)."
    )
    name_pattern: str = Field(
        DEFAULT_PATTERN,
        description="Recording (and, in paired mode, metadata) file names: tokens {yyyyMMdd} "
        "{hhmmss} {uid} {direction} {session_id} {ani} {dnis} {id} {ext} and custom {names}.",
        examples=["{yyyyMMdd}-{hhmmss}_{uid}_{direction}_{session_id}_{ani}_{dnis}.{ext}"],
    )
    id_pattern: str = Field(
        "{source}_{id}.{ext}",
        description="by_id mode: names of recordings that carry the id of their metadata file.",
        examples=["ringcentral_{id}.{ext}"],
    )
    timezone: str = Field(
        "UTC", description="IANA zone of the call times in names.", examples=["America/Chicago"]
    )
    call_time_is: Literal["start", "end"] = Field(
        "start", description="Whether the time in a name is the call's start or its end."
    )
    metadata_timeout_seconds: float = Field(
        3600,
        gt=0,
        description="A recording still without metadata this long after it arrived is reported "
        "(metadata_missing); it still pairs when the metadata comes. In matched mode, metadata "
        "still unmatched this long is reported (no_match).",
    )
    update_window_hours: float = Field(
        48,
        ge=0,
        description="A new version of a metadata file updates the call only this long after "
        "the call time; later ones are rejected (metadata_update_too_late).",
    )
    metadata: MetadataLimits = Field(
        default_factory=MetadataLimits, description="Bounds on one metadata file."
    )
    match_fields: tuple[MatchField, ...] = Field(
        MATCH_FIELDS,
        min_length=1,
        description="matched mode: the fields compared (each only when both sides have it).",
    )
    metadata_keys: MetadataKeys = Field(
        default_factory=MetadataKeys, description="Metadata keys of uid, call time, ANI, DNIS."
    )
    call_time_tolerance_seconds: float = Field(
        120, ge=0, description="matched mode: largest call-time difference that still matches."
    )
    agent_channel: Literal["left", "right"] = Field(
        "left",
        description="Stereo recordings: the agent's channel; the other one is the customer's.",
    )

    @field_validator("name_pattern", "id_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return NamePattern.validate(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("match_fields")
    @classmethod
    def _distinct(cls, value: tuple[MatchField, ...]) -> tuple[MatchField, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a field is listed twice")
        return value

    @model_validator(mode="after")
    def _id_pattern_has_id(self) -> Self:
        if self.mode == "by_id" and "{id}" not in self.id_pattern:
            raise ValueError("id_pattern: needs an {id} token in by_id mode")
        if "{ext}" not in self.name_pattern:
            raise ValueError("name_pattern: needs an {ext} token at its end")
        return self

    def names(self) -> NamePattern:
        """The compiled pattern of recording names in this mode."""
        pattern = self.id_pattern if self.mode == "by_id" else self.name_pattern
        return NamePattern(pattern, self.timezone)
