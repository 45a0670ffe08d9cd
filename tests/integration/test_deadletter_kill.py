"""SIGKILL the worker while it records dead letters: every one ends up in the table, once."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from support import (
    CODEC,
    free_port,
    settings_for,
    start_service,
    topics,
    wait_for_log,
    write_config,
)

ROWS = 20_000


def dead_letter(i: int) -> dict[str, object]:
    """One rejected row of a big file."""
    return {
        "tenant": "acme",
        "connector": "crm",
        "file_id": "f" * 32,
        "path": "exports/big.csv",
        "row": i + 1,
        "line": i + 2,
        "column": "started_at",
        "reason": "bad_timestamp",
        "message": "not an ISO 8601 timestamp",
        "excerpt": f"C-{i},yesterday",
        "stage": "validate",
        "raw": f"C-{i},yesterday\n".encode(),
        "raw_ref": None,
        "raw_size": 12,
        "header": "id,started_at\n",
        "header_ref": None,
        "occurred_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
    }


def produce(kafka: str, topic: str, numbers: range) -> None:
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 20})
    for i in numbers:
        value = CODEC.encode("callstream.DeadLetter", dead_letter(i))
        producer.produce(topic, key=b"acme/crm/exports/big.csv", value=value)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_while_dead_letters_are_recorded_loses_and_doubles_none(
    capsys: pytest.CaptureFixture[str], kafka: str, prefix: str, tmp_path: Path
) -> None:
    db = tmp_path / "callstream.db"
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [],
        database_url=f"sqlite+aiosqlite:///{db}",
        processors={"batch_size": 100, "session_timeout_seconds": 6},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "worker.log"
    env = {"CALLSTREAM_HTTP__PORT": str(free_port())}
    worker = start_service(config, log, env)
    killed_at: list[int] = []
    try:
        wait_for_log(log, "callstream is running", 120)
        topic = topics(prefix).dead_letter
        produce(kafka, topic, range(ROWS))
        produce(kafka, topic, range(500))  # redelivered: the same dead letters again
        deadline = time.monotonic() + 300
        while count(db) < ROWS:
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            stored = count(db)
            if len(killed_at) < 2 and stored >= 2_000 * (len(killed_at) + 1):
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                killed_at.append(stored)
                env = {"CALLSTREAM_HTTP__PORT": str(free_port())}
                worker = start_service(config, log, env)
            time.sleep(0.05)
        time.sleep(2)  # anything redelivered after the last row is absorbed, not added
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    with sqlite3.connect(db) as conn:
        rows = sorted(r[0] for r in conn.execute("SELECT row FROM dead_letters"))
    with capsys.disabled():
        print(f"\nSIGKILL with {killed_at} of {ROWS} dead letters recorded; {len(rows)} in the end")
    assert len(killed_at) == 2 and all(k < ROWS for k in killed_at)
    assert rows == list(range(1, ROWS + 1))
