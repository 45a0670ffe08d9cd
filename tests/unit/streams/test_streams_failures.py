"""The failure policy: what is retried forever, what is dead-lettered, and bisection."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa

from connectors.errors import (
    AuthenticationFailed,
    HostKeyMismatch,
    NotARegularFile,
    StoreUnavailable,
)
from streams.agents.cases import CaseWriter
from streams.cases.store import BatchOutcome, CaseStore
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.errors import PublishError, SchemaError
from streams.failures import Failure, GaveUp, attempt, classify
from streams.kafka import Record
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics

CODEC = AvroCodec()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (StoreUnavailable("down"), Failure.TRANSIENT),
        (NotARegularFile("fifo"), Failure.PERMANENT),
        (AuthenticationFailed("s3://b: InvalidAccessKeyId"), Failure.TRANSIENT),
        (HostKeyMismatch("sftp: key changed", fingerprint="SHA256:x"), Failure.TRANSIENT),
        (AuthenticationFailed("s3://b: InvalidAccessKeyId"), Failure.TRANSIENT),
        (HostKeyMismatch("sftp: key changed", fingerprint="SHA256:x"), Failure.TRANSIENT),
        (PublishError("broker gone", code="_TRANSPORT"), Failure.TRANSIENT),
        (
            PublishError("auth", retriable=False, code="TOPIC_AUTHORIZATION_FAILED"),
            Failure.TRANSIENT,
        ),
        (PublishError("big", retriable=False, code="MSG_SIZE_TOO_LARGE"), Failure.PERMANENT),
        (sa.OperationalError("select", {}, Exception("connection refused")), Failure.TRANSIENT),
        (sa.DataError("insert", {}, Exception("invalid byte sequence 0x00")), Failure.PERMANENT),
        (SchemaError("bad"), Failure.PERMANENT),
        (ConnectionResetError(), Failure.TRANSIENT),
        (RecursionError(), Failure.UNKNOWN),
        (ValueError("digits"), Failure.UNKNOWN),
        (KeyError("x"), Failure.UNKNOWN),
    ],
)
def test_classify(exc: BaseException, kind: Failure) -> None:
    assert classify(exc) is kind


async def test_transient_failures_are_retried_until_they_pass() -> None:
    calls = 0

    async def effect() -> str:
        nonlocal calls
        calls += 1
        if calls < 6:
            raise StoreUnavailable("down")
        return "done"

    metrics = Metrics()
    got = await attempt(
        "x", effect, stage="t", metrics=metrics, initial_delay=0.001, max_delay=0.002
    )
    assert got == "done" and calls == 6
    assert metrics.processing_failures.labels(stage="t", kind="transient")._value.get() == 5


async def test_unknown_failures_give_up_after_max_attempts() -> None:
    calls = 0

    async def effect() -> None:
        nonlocal calls
        calls += 1
        raise RecursionError("deep")

    with pytest.raises(GaveUp) as info:
        await attempt("x", effect, stage="t", metrics=Metrics(), max_attempts=3, initial_delay=0)
    assert calls == 3 and info.value.kind is Failure.UNKNOWN


async def test_permanent_failures_give_up_at_once() -> None:
    async def effect() -> None:
        raise PublishError("big", retriable=False, code="MSG_SIZE_TOO_LARGE")

    with pytest.raises(GaveUp) as info:
        await attempt("x", effect, stage="t", metrics=Metrics())
    assert info.value.attempts == 1


async def test_cancellation_goes_through_a_transient_retry() -> None:
    async def effect() -> None:
        raise StoreUnavailable("down")

    task = asyncio.create_task(attempt("x", effect, stage="t", metrics=Metrics()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def send_batch(self, records: list[Record]) -> None:
        self.records.extend(records)


class PoisonStore:
    """Fails every batch holding the poison conversation, stores the others."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.stored: list[str] = []

    async def apply(self, conversations: list[dict[str, Any]]) -> BatchOutcome:
        ids = [c["external_interaction_id"] for c in conversations]
        if self.poison in ids:
            raise ValueError("this conversation breaks the store")
        self.stored.extend(ids)
        out = BatchOutcome()
        out.opened["acme"] += len(ids)
        return out


def conversation(i: int) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "source_system": "crm",
        "external_interaction_id": f"CALL-{i}",
        "channel": "voice",
        "direction": None,
        "started_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
        "ended_at": None,
        **dict.fromkeys(["agent_id", "agent_name", "team", "campaign", "ani", "dnis"], None),
        "recording_ref": None,
        "transcript_ref": None,
        "turns": [],
        "metadata": {},
        "source": {
            "file_id": "f1",
            "connector": "crm",
            "path": "a.csv",
            "row": i + 1,
            "announced_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
        },
    }


async def test_a_poison_conversation_is_isolated_and_dead_lettered(tmp_path: Path) -> None:
    store = PoisonStore("CALL-37")
    producer = FakeProducer()
    metrics = Metrics()
    topics = Topics("t")
    dead = DeadLetters(CODEC, topics, metrics, LocalMediaStore(tmp_path), 1_000_000)
    writer = CaseWriter(store, producer, dead, metrics, ProcessorSettings(max_attempts=1))  # type: ignore[arg-type]
    batch = [(conversation(i), b"raw-%d" % i) for i in range(100)]
    outcome = await writer.write(batch)
    assert sorted(store.stored) == sorted(f"CALL-{i}" for i in range(100) if i != 37)
    assert outcome.opened["acme"] == 99
    (record,) = producer.records
    letter = CODEC.decode("callstream.DeadLetter", record[2])
    assert (letter["reason"], letter["row"], letter["raw"]) == ("processing_failed", 38, b"raw-37")
    assert "breaks the store" in letter["message"]
    assert metrics.poison_records.labels(stage="cases")._value.get() == 1


async def test_redelivered_older_content_creates_no_version(tmp_path: Path) -> None:
    """[A, A'] applied, then [A, A'] redelivered: still version 2, no new result."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    async with CaseStore(url, CODEC, Topics("t"), lambda _t: ()) as store:
        a = conversation(1)
        a_changed = {**conversation(1), "team": "Changed"}
        a_changed["source"] = {**a["source"], "file_id": "f2"}
        first = await store.apply([a, a_changed])
        assert (first.opened["acme"], first.updated["acme"]) == (1, 1)
        again = await store.apply([a, a_changed])
        assert again.duplicates["acme"] == 2 and not again.opened and not again.updated
        late = await store.apply([a])  # the older content alone, out of order
        assert late.duplicates["acme"] == 1 and not late.updated
        assert await store.count_current_results() == 1


def test_a_large_record_that_names_no_tenant_keeps_its_raw_input_in_the_media_store(
    tmp_path: Path,
) -> None:
    """An undecodable conversation names no tenant, connector nor file: its raw input, too
    large for the record, still goes to the media store (an empty key segment was refused)."""
    dead = DeadLetters(CODEC, Topics("t"), Metrics(), LocalMediaStore(tmp_path), 70_000)
    raw = b"\xff" * 100_000
    _topic, _key, value = dead.build(
        tenant="",
        connector="",
        file_id="",
        path="",
        reason="undecodable_record",
        message="conversation record: not Avro",
        stage="cases",
        raw=raw,
    )
    letter = CODEC.decode("callstream.DeadLetter", value)
    assert letter["raw"] is None and letter["raw_size"] == len(raw)
    assert LocalMediaStore(tmp_path).get_bytes(letter["raw_ref"], len(raw)) == raw
