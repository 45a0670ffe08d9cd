"""SIGKILL callstream twice while it consumes a platform's event stream: nothing lost or doubled.

The platform keeps producing 4,000 conversation events while the service (its own process, as
in production) is killed at random points and restarted. At the end: exactly one case per
event and one version per case (the redelivered events were absorbed), and every result is on
the platform's feedback topic, with one idempotency key per conversation however often a
result was re-sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from platform_support import (
    FeedbackReader,
    event,
    platform_connector,
    platform_settings,
    platform_topics,
    produce,
)
from sqlalchemy import func, select
from support import free_port, start_service, write_config

from streams.cases.store import CaseStore, case_versions
from streams.codec import AvroCodec
from streams.embedded.kafka import LocalKafka
from streams.topics import Topics

EVENTS = 2500


def test_sigkill_twice_mid_stream_loses_and_doubles_nothing(
    capsys: pytest.CaptureFixture[str],
    kafka: str,
    platform_kafka: LocalKafka,
    prefix: str,
    tmp_path: Path,
) -> None:
    events_topic, feedback_topic = f"{prefix}.events", f"{prefix}.feedback"
    platform_topics(platform_kafka, events_topic, feedback_topic)
    conn = platform_connector(
        platform_kafka,
        "plat",
        events_topic,
        feedback_topic,
        batch_size=200,
        session_timeout_seconds=6,
    )
    db = tmp_path / "callstream.db"
    settings = platform_settings(
        kafka,
        prefix,
        tmp_path / "data",
        [conn],
        database_url=f"sqlite+aiosqlite:///{db}",
        processors={"session_timeout_seconds": 6},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "service.log"
    feedback = FeedbackReader(platform_kafka, feedback_topic)
    kill_points = sorted(random.Random().sample(range(300, EVENTS - 1000), 2))

    def stream() -> None:  # the platform keeps producing while callstream dies and restarts
        for start in range(0, EVENTS, 200):
            chunk = range(start, min(EVENTS, start + 200))
            produce(
                platform_kafka,
                events_topic,
                [(f"P-{i}".encode(), json.dumps(event(i)).encode()) for i in chunk],
            )
            time.sleep(0.25)

    producer = threading.Thread(target=stream, daemon=True)
    worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(free_port())})
    killed_at: list[int] = []
    try:
        producer.start()
        deadline = time.monotonic() + 400
        while len({key for key, _h, _r in feedback.records}) < EVENTS:
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            assert worker.poll() is None, log.read_text()[-4000:]
            feedback.poll(0.2)
            progressed = not killed_at or len(feedback.records) >= killed_at[-1] + 200
            if (
                len(killed_at) < 2
                and progressed  # the restarted worker is streaming again: kill it mid-stream
                and len(feedback.records) >= kill_points[len(killed_at)]
            ):
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                killed_at.append(len(feedback.records))
                worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(free_port())})
        feedback.poll(2.0)
        producer.join(5)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        feedback.close()

    async def counts() -> tuple[int, int]:
        url = f"sqlite+aiosqlite:///{db}"
        async with CaseStore(url, AvroCodec(), Topics(prefix), lambda _t: ()) as store:
            async with store.engine.connect() as c:
                versions = (
                    await c.execute(select(func.count()).select_from(case_versions))
                ).scalar_one()
            return await store.count_cases("acme"), int(versions)

    cases, versions = asyncio.run(counts())
    keys_of: dict[str, set[str]] = defaultdict(set)
    for key, headers, result in feedback.records:
        assert headers["idempotency-key"] == result["idempotency_key"]
        keys_of[key].add(headers["idempotency-key"])
    with capsys.disabled():
        print(
            f"\nSIGKILL after {killed_at} results on the platform's feedback topic; "
            f"{cases} cases, {versions} case versions for {EVENTS} events; "
            f"{len(feedback.records)} results delivered for {len(keys_of)} conversations "
            f"({len(feedback.records) - len(keys_of)} re-sent with the same idempotency key)"
        )
    assert len(killed_at) == 2
    assert cases == EVENTS  # 0 lost
    assert versions == EVENTS  # 0 double-counted: no redelivery made a second version
    assert set(keys_of) == {f"P-{i:06d}" for i in range(EVENTS)}  # every result delivered
    assert all(len(keys) == 1 for keys in keys_of.values())  # same key however often re-sent
