"""Cases repeated across files, SIGKILL, and out-of-order redelivery: never a spurious version.

File 1 opens 3,000 cases; file 2 changes every one of them (version 2). The worker is killed
twice while it applies file 2, then every conversation record of both files is published again,
newest first (the order a consumer could see after a crash and a rebalance). Each case must end
at exactly version 2 with exactly two result versions: a delivery that was applied before has no
second effect, even though newer content for its case was applied in between.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from servers.postgres import PostgresServer
from sqlalchemy import func, select
from support import (
    CSV_HEADER,
    TopicReader,
    connector,
    conversation_row,
    settings_for,
    start_service,
    write_config,
)

from connectors.local import LocalConfig
from streams.cases.store import CaseStore, cases
from streams.codec import AvroCodec
from streams.topics import Topics

ROWS = 3_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop(inbox: Path, name: str, data: bytes) -> None:
    part = inbox / f"{name}.part"
    part.write_bytes(data)
    part.rename(inbox / name)


def _raw_records(kafka: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    records.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return records


def test_kills_and_out_of_order_redelivery_never_create_a_version(
    kafka: str, prefix: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.reset()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop = connector("drop", LocalConfig(root=inbox), interval_seconds=0.5, min_age_seconds=0)
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [drop],
        database_url=pg_server.async_url(),
        # Small batches: file 2 is applied in 60 transactions, so the kills land mid-way.
        processors={"session_timeout_seconds": 6, "batch_size": 50},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "worker.log"
    topics = Topics(prefix)
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    first = CSV_HEADER + "".join(conversation_row(i) for i in range(ROWS))
    second = CSV_HEADER + "".join(conversation_row(i, disposition="escalated") for i in range(ROWS))
    # Kill when this many of file 2's versions are applied, read from the database: the relay
    # publishes results in rounds of up to 2,000, so the results topic can pass a kill point,
    # or reach the end, between two reads.
    kill_points = sorted(random.Random().sample(range(300, ROWS - 600), 2))
    worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(_free_port())})
    killed_at: list[int] = []
    try:
        _drop(inbox, "day1.csv", first.encode())
        deadline = time.monotonic() + 300
        while len(results.records) < ROWS:
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
            results.poll(0.3)
        _drop(inbox, "day2.csv", second.encode())
        while len({r["idempotency_key"] for r in results.records}) < 2 * ROWS:
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
            results.poll(0.05)
            if len(killed_at) == 2:
                continue
            applied = int(pg_server.scalar("SELECT count(*) FROM cases WHERE version = 2"))
            if applied >= kill_points[len(killed_at)]:
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                killed_at.append(applied)
                port = _free_port()
                worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(port)})
        # Redeliver every conversation of both files, newest first.
        records = _raw_records(kafka, topics.conversations, 2 * ROWS)
        assert len(records) >= 2 * ROWS
        producer = Producer({"bootstrap.servers": kafka})
        for key, value in reversed(records):
            producer.produce(topics.conversations, key=key, value=value)
        assert producer.flush(30) == 0
        before = len(results.records)
        quiet_until = time.monotonic() + 20
        while time.monotonic() < quiet_until:
            assert worker.poll() is None, log.read_text()[-3000:]
            results.poll(0.5)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        results.close()

    async def versions() -> dict[int, int]:
        codec = AvroCodec()
        store = CaseStore(pg_server.async_url(), codec, topics, lambda _t: ())
        async with store, store.engine.connect() as conn:
            rows = await conn.execute(
                select(cases.c.version, func.count()).group_by(cases.c.version)
            )
            return {int(v): int(n) for v, n in rows}

    by_version = asyncio.run(versions())
    keys = {r["idempotency_key"] for r in results.records}
    print(
        f"\nSIGKILL after {killed_at} of file 2's {ROWS} versions applied; "
        f"redelivered {len(records)} conversations newest first; "
        f"cases by version {by_version}; {len(keys)} result keys; "
        f"{len(results.records) - before} result events after the redelivery"
    )
    assert len(killed_at) == 2
    assert all(n < ROWS for n in killed_at), "a kill landed after file 2 was applied"
    assert by_version == {2: ROWS}
    assert len(keys) == 2 * ROWS
    assert {r["result_version"] for r in results.records} == {1, 2}
