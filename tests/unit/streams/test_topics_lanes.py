"""Lanes: which files are bulk, the topics of each lane, the consumer group of each lane."""

from __future__ import annotations

from streams.app import processors_group
from streams.settings import ProcessorSettings
from streams.topics import BULK, LIVE, Topics, lane_of


def test_a_file_at_or_above_the_threshold_is_bulk_and_0_keeps_every_file_live() -> None:
    assert lane_of(1_048_575, 1_048_576) == LIVE
    assert lane_of(1_048_576, 1_048_576) == BULK
    assert lane_of(0, 1) == LIVE
    assert lane_of(10**12, 0) == LIVE


def test_the_default_threshold_is_one_mebibyte() -> None:
    assert ProcessorSettings().bulk_file_bytes == 1024 * 1024


def test_each_lane_has_its_own_arrivals_and_conversations_and_shares_the_rest() -> None:
    live, bulk = Topics("cs"), Topics("cs").in_lane(BULK)
    assert live.lane == LIVE
    assert (live.file_arrivals, live.conversations) == (
        "cs.file-arrivals.v1",
        "cs.conversations.v1",
    )
    assert (bulk.file_arrivals, bulk.conversations) == (
        "cs.file-arrivals-bulk.v1",
        "cs.conversations-bulk.v1",
    )
    for shared in ("file_outcomes", "dead_letter", "cases", "analysis_results", "source_records"):
        assert getattr(live, shared) == getattr(bulk, shared)
    assert bulk.in_lane(LIVE) == live


def test_every_topic_of_both_lanes_is_created_whatever_the_view() -> None:
    names = Topics("cs").all()
    assert names == Topics("cs").in_lane(BULK).all()
    assert len(names) == len(set(names)) == 9
    assert {"cs.file-arrivals-bulk.v1", "cs.conversations-bulk.v1"} <= set(names)


def test_each_lane_consumes_in_its_own_group_the_live_one_unchanged() -> None:
    assert processors_group(Topics("cs")) == "cs-processors"
    assert processors_group(Topics("cs").in_lane(BULK)) == "cs-processors-bulk"
