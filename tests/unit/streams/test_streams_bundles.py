"""Recording + metadata bundles: the engine's decisions, and the file processor driving them
over a local folder and an SQLite file (no network)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import RemoteFile
from connectors.local import LocalConfig
from connectors.poller import PollConfig
from streams.cases.store import CaseStore, content_hash, content_json
from streams.codec import AvroCodec
from streams.ingest.bundles import (
    Bundle,
    MatchFacts,
    classify,
    conversation,
    match,
    update_too_late,
)
from streams.ingest.files import FileProcessor
from streams.ingest.recordings import RecordingSettings
from streams.kafka import Record
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.runner import file_id
from streams.settings import ConnectorSettings, Settings, TenantSettings
from streams.topics import Topics

CODEC = AvroCodec()
TOPICS = Topics("t")
CALL = dt.datetime(2020, 10, 12, 14, 2, 53, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# -- decisions ----------------------------------------------------------------------------------


def test_classify_tells_recordings_metadata_and_other_files_apart() -> None:
    paired = RecordingSettings()
    rec = classify("in/20201012-140253_joe_baducci.wav", paired)
    assert rec is not None and rec.kind == "recording" and rec.key == "20201012-140253_joe_baducci"
    assert rec.name is not None and rec.name.call_time == CALL
    assert rec.name.fields["uid"] == "joe_baducci"
    meta = classify("in/20201012-140253_joe_baducci.xml", paired)
    assert meta is not None and (meta.kind, meta.key) == ("metadata", rec.key)
    bad = classify("in/joe.wav", paired)
    assert bad is not None and bad.kind == "recording" and bad.name is None
    assert classify("exports/daily.csv", paired) is None  # a CSV export keeps its path
    assert classify("chats/CHAT-1.tsv", paired) is None
    by_id = RecordingSettings(mode="by_id")
    r = classify("ringcentral_BXyT30eVTWIZjUA.wav", by_id)
    assert r is not None and r.key == "BXyT30eVTWIZjUA"
    m = classify("BXyT30eVTWIZjUA.xml", by_id)
    assert m is not None and (m.kind, m.key) == ("metadata", "BXyT30eVTWIZjUA")
    matched = classify("any-name.json", RecordingSettings(mode="matched"))
    assert matched is not None and (matched.kind, matched.key) == ("metadata", None)


def test_settings_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="timezone"):
        RecordingSettings(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="name_pattern"):
        RecordingSettings(name_pattern="{yyyyMMdd}-{nope")
    with pytest.raises(ValueError, match="id_pattern"):
        RecordingSettings(mode="by_id", id_pattern="{source}.{ext}")


def test_match_compares_only_fields_both_sides_have() -> None:
    rec = RecordingSettings(mode="matched", call_time_tolerance_seconds=120)
    recording = MatchFacts("Joe", CALL, "+14155550100", None)
    same = MatchFacts("joe", CALL + dt.timedelta(seconds=90), "14155550100", "18005550100")
    assert match(same, recording, rec) == ("uid", "call_time", "ani")
    assert match(MatchFacts("joe", CALL + dt.timedelta(seconds=121)), recording, rec) == ()
    assert match(MatchFacts("ann", CALL), recording, rec) == ()
    assert match(MatchFacts(), recording, rec) == ()  # nothing compared: no match
    only_uid = RecordingSettings(mode="matched", match_fields=("uid",))
    assert match(MatchFacts("joe", CALL + dt.timedelta(days=3)), recording, only_uid) == ("uid",)


def test_update_window_counts_from_the_call_time() -> None:
    rec = RecordingSettings(update_window_hours=48)
    bundle = Bundle("acme", "five9", "k", "paired", rec_call_time=CALL, meta_file_id="m")
    assert update_too_late(bundle, CALL + dt.timedelta(hours=47), rec) is None
    assert update_too_late(bundle, CALL + dt.timedelta(hours=49), rec) == dt.timedelta(hours=1)


def test_the_conversation_comes_from_the_bundle_alone() -> None:
    rec = RecordingSettings(call_time_is="end")
    bundle = Bundle(
        "acme",
        "five9",
        "20201012-140253_joe",
        "paired",
        rec_file_id="r",
        rec_ref="file:///m/x.wav#sha256=ab",
        rec_duration=30.0,
        rec_fields={"uid": "joe", "session_id": "S1", "direction": "outbound"},
        rec_call_time=CALL,
        meta_file_id="m",
        meta_fields={"disposition": "sale", "team": "Sales"},
        meta_versions=1,
    )
    a = conversation(bundle, rec, {"file_id": "r", "row": 1})
    b = conversation(bundle, rec, {"file_id": "m", "row": 1})
    assert content_hash(content_json(a)) == content_hash(content_json(b))
    assert (a["started_at"], a["ended_at"], a["duration_ms"]) == (
        CALL - dt.timedelta(seconds=30),
        CALL,
        30_000,
    )
    assert (a["agent_id"], a["direction"], a["team"]) == ("joe", "outbound", "Sales")
    assert a["metadata"] == {"disposition": "sale", "team": "Sales", "session_id": "S1"}
    assert a["recording_ref"] == "file:///m/x.wav#sha256=ab"
    CODEC.encode("callstream.Conversation", {**a, "source": None})


# -- the processor over a local folder and SQLite -----------------------------------------------


class Producer:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def send_batch(self, records: list[Record]) -> None:
        self.records.extend(records)

    def of(self, topic: str, schema: str) -> list[dict[str, Any]]:
        return [CODEC.decode(schema, v) for t, _k, v in self.records if t == topic]


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def arrival_for(root: Path, path: str, announced: dt.datetime) -> dict[str, Any]:
    st = (root / path).stat()
    version = RemoteFile(path, st.st_size, st.st_mtime).version_id
    return {
        "file_id": file_id("acme", "drop", path, version),
        "tenant": "acme",
        "connector": "drop",
        "path": path,
        "version_id": version,
        "mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        "announced_at": announced,
    }


class Rig:
    def __init__(self, tmp_path: Path, rec: RecordingSettings) -> None:
        self.inbox = tmp_path / "in"
        self.inbox.mkdir()
        drop = ConnectorSettings(
            name="drop",
            store=LocalConfig(root=self.inbox),
            poll=PollConfig(min_age_seconds=0),
            ingest={"source_system": "five9"},
            recordings=rec,
        )
        self.settings = Settings(
            data_dir=tmp_path / "data",
            demo=False,
            tenants=[TenantSettings(id="acme", connectors=[drop])],
        )
        self.url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
        self.media = LocalMediaStore(tmp_path / "media")
        self.producer = Producer()
        self.clock = Clock(CALL + dt.timedelta(hours=1))
        self.tick = 0

    async def __aenter__(self) -> Rig:
        self.store = CaseStore(self.url, CODEC, TOPICS, lambda _t: ())
        await self.store.start()
        self.processor = FileProcessor(
            self.settings,
            CODEC,
            TOPICS,
            self.producer,  # type: ignore[arg-type]
            Metrics(),
            self.store,
            self.media,
        )
        assert self.processor.bundles is not None
        self.processor.bundles.clock = self.clock
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.processor.close()
        await self.store.stop()

    async def drop(self, name: str, data: bytes) -> dict[str, Any]:
        (self.inbox / name).write_bytes(data)
        self.tick += 1
        arrival = arrival_for(self.inbox, name, T0 + dt.timedelta(minutes=self.tick))
        result = await self.processor.process(arrival)
        return {"outcome": result.outcome, "reason": result.reason, "arrival": arrival}

    async def redeliver(self, arrival: dict[str, Any]) -> str:
        result = await self.processor.process(arrival)
        return result.skipped or result.outcome

    def conversations(self) -> list[dict[str, Any]]:
        return self.producer.of(TOPICS.conversations, "callstream.Conversation")

    def dead(self) -> list[dict[str, Any]]:
        return self.producer.of(TOPICS.dead_letter, "callstream.DeadLetter")

    async def apply(self) -> None:
        await self.store.apply(self.conversations())


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64
META = json.dumps({"disposition": "sale", "account": "ACME"}).encode()


@pytest.mark.parametrize("order", ["recording_first", "metadata_first"])
async def test_a_recording_and_its_metadata_make_one_call_in_either_order(
    tmp_path: Path, order: str
) -> None:
    files = [("20201012-140253_joe.wav", WAV), ("20201012-140253_joe.json", META)]
    if order == "metadata_first":
        files.reverse()
    async with Rig(tmp_path, RecordingSettings()) as rig:
        first = await rig.drop(*files[0])
        assert first["outcome"] == "processed" and rig.conversations() == []
        second = await rig.drop(*files[1])
        assert second["outcome"] == "processed"
        [conv] = rig.conversations()
        assert conv["external_interaction_id"] == "20201012-140253_joe"
        assert conv["recording_ref"].startswith("file://")
        assert "#sha256=" in conv["recording_ref"]
        assert conv["agent_id"] == "joe" and conv["started_at"] == CALL
        assert conv["metadata"] == {"disposition": "sale", "account": "ACME"}
        assert conv["source"]["file_id"] == second["arrival"]["file_id"]
        await rig.apply()
        assert await rig.store.count_cases("acme") == 1


async def test_updates_within_the_window_version_the_call_later_ones_are_refused(
    tmp_path: Path,
) -> None:
    async with Rig(tmp_path, RecordingSettings()) as rig:
        await rig.drop("20201012-140253_joe.wav", WAV)
        await rig.drop("20201012-140253_joe.json", META)
        rig.clock.now = CALL + dt.timedelta(hours=47)
        v2 = await rig.drop("20201012-140253_joe.json", b'{"disposition": "refund"}')
        assert v2["outcome"] == "processed"
        rig.clock.now = CALL + dt.timedelta(hours=49)
        v3 = await rig.drop("20201012-140253_joe.json", b'{"disposition": "churn"}')
        assert (v3["outcome"], v3["reason"]) == ("invalid", "metadata_update_too_late")
        convs = rig.conversations()
        assert [c["metadata"].get("disposition") for c in convs] == ["sale", "refund"]
        assert [d["reason"] for d in rig.dead()] == ["metadata_update_too_late"]
        assert rig.dead()[0]["stage"] == "bundle"
        assert rig.processor.bundles is not None
        bundle = await rig.processor.bundles.get("acme", "five9", "20201012-140253_joe")
        assert bundle is not None and bundle.meta_versions == 2
        await rig.apply()
        assert await rig.store.count_cases("acme") == 1


async def test_a_redelivered_half_repeats_the_same_content(tmp_path: Path) -> None:
    async with Rig(tmp_path, RecordingSettings()) as rig:
        rec = await rig.drop("20201012-140253_joe.wav", WAV)
        meta = await rig.drop("20201012-140253_joe.json", META)
        # the outcomes were never recorded (a crash): both files come again
        await rig.store.record_file_outcome({**_progress(rec["arrival"])})
        await rig.store.record_file_outcome({**_progress(meta["arrival"])})
        assert await rig.redeliver(rec["arrival"]) == "processed"
        assert await rig.redeliver(meta["arrival"]) == "processed"
        convs = rig.conversations()
        assert len(convs) == 3
        assert len({content_hash(content_json(c)) for c in convs}) == 1
        outcome = await rig.store.apply(convs)
        assert sum(outcome.opened.values()) == 1 and sum(outcome.updated.values()) == 0


def _progress(arrival: dict[str, Any]) -> dict[str, Any]:
    return {
        "file_id": arrival["file_id"],
        "tenant": "acme",
        "connector": "drop",
        "path": arrival["path"],
        "version_id": arrival["version_id"],
        "outcome": "processing",
        "rows_accepted": 0,
        "rows_rejected": 0,
        "rejected_by_reason": "{}",
        "rows_done": 0,
        "lines_read": 0,
        "reason": None,
        "decided_at": T0,
    }


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("joe.wav", WAV, "bad_recording_name"),
        ("20201012-140253_joe.json", b'{"a": {"b": 1}}', "nested_metadata"),
        (
            "20201012-140253_joe.xml",
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<call><x>&b;</x></call>",
            "unsafe_xml",
        ),
    ],
)
async def test_bad_names_and_bad_metadata_are_rejected(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    async with Rig(tmp_path, RecordingSettings()) as rig:
        got = await rig.drop(name, data)
        assert (got["outcome"], got["reason"]) == ("invalid", reason)
        assert [d["reason"] for d in rig.dead()] == [reason]


async def test_by_id_metadata_opens_the_call_and_the_recording_updates_it(tmp_path: Path) -> None:
    async with Rig(tmp_path, RecordingSettings(mode="by_id")) as rig:
        await rig.drop("BXyT30eVTWIZjUA.xml", b"<call><disposition>sale</disposition></call>")
        [first] = rig.conversations()
        assert first["external_interaction_id"] == "BXyT30eVTWIZjUA"
        assert first["recording_ref"] is None
        await rig.drop("ringcentral_BXyT30eVTWIZjUA.wav", WAV)
        second = rig.conversations()[1]
        assert second["recording_ref"] is not None
        assert second["metadata"] == {"disposition": "sale", "source": "ringcentral"}
        await rig.apply()
        assert await rig.store.count_cases("acme") == 1


async def test_matched_metadata_pairs_with_the_one_recording_and_reports_ambiguity(
    tmp_path: Path,
) -> None:
    rec = RecordingSettings(mode="matched", name_pattern="{yyyyMMdd}-{hhmmss}_{uid}_{ani}.{ext}")
    async with Rig(tmp_path, rec) as rig:
        await rig.drop("20201012-140253_joe_14155550100.wav", WAV)
        meta = {"uid": "joe", "call_time": "2020-10-12T14:03:30Z", "ani": "+14155550100"}
        got = await rig.drop("crm-1.json", json.dumps(meta).encode())
        assert got["outcome"] == "processed"
        [conv] = rig.conversations()
        assert conv["external_interaction_id"] == "20201012-140253_joe_14155550100"
        assert conv["metadata"]["match.fields"] == "uid,call_time,ani"
        # two recordings of ann within the tolerance: metadata for ann is ambiguous
        await rig.drop("20201012-150000_ann_14155550111.wav", WAV)
        await rig.drop("20201012-150100_ann_14155550111.wav", WAV)
        ann = {"uid": "ann", "call_time": "2020-10-12T15:00:30Z"}
        amb = await rig.drop("crm-2.json", json.dumps(ann).encode())
        assert (amb["outcome"], amb["reason"]) == ("invalid", "ambiguous_match")
        assert len(rig.conversations()) == 1
        # metadata first, then its recording
        bob = {"uid": "bob", "call_time": "2020-10-12T16:00:00Z"}
        await rig.drop("crm-3.json", json.dumps(bob).encode())
        assert len(rig.conversations()) == 1
        await rig.drop("20201012-160010_bob_14155550122.wav", WAV)
        assert rig.conversations()[-1]["metadata"]["match.fields"] == "uid,call_time"


async def test_a_recording_without_metadata_is_reported_once_and_still_pairs(
    tmp_path: Path,
) -> None:
    from streams.ingest.bundles import BundleSweeper

    rec = RecordingSettings(metadata_timeout_seconds=60)
    async with Rig(tmp_path, rec) as rig:
        await rig.drop("20201012-140253_joe.wav", WAV)
        assert rig.processor.bundles is not None
        metrics = Metrics()
        sweeper = BundleSweeper(
            rig.processor.bundles, [("acme", "drop", rec)], rig.processor.dead, metrics
        )
        assert await sweeper.sweep() == 0
        rig.clock.now += dt.timedelta(seconds=61)
        assert await sweeper.sweep() == 1
        assert await sweeper.sweep() == 0  # reported once
        await rig.drop("20201012-140253_joe.json", META)
        assert len(rig.conversations()) == 1
    value = metrics.registry.get_sample_value(
        "callstream_recordings_metadata_missing_total", {"tenant": "acme"}
    )
    assert value == 1
