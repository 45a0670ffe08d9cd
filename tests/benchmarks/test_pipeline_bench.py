"""End-to-end pipeline benchmark: prints figures, asserts nothing about speed.

All on one broker, one run:

1. the raw limit: confluent-kafka producing and consuming the same Avro Conversation records
   (encode, produce, consume, decode; producer and consumer running concurrently);
2. end-to-end conversations per second for a 50,000-row CSV in CI (``make bench-pipeline``:
   100,000; ``CALLSTREAM_PIPELINE_BENCH_ROWS``), from the end of its SFTP upload to
   the last result on the feedback topic, with the service running as its own process (as in
   production) against PostgreSQL, and a stage breakdown plus a py-spy profile of that process;
3. p50 / p99 latency from upload to result for single small files with a 1 s poll.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    CODEC,
    TopicReader,
    connector,
    conversations_csv,
    settings_for,
    sftp_config,
    sftp_session,
    start_service,
    upload,
    write_config,
)

from streams.ingest.parse import ParseSettings
from streams.topics import Topics, ensure_topics

ROWS = int(os.environ.get("CALLSTREAM_PIPELINE_BENCH_ROWS", "50000"))
RAW = ROWS
SMALL_FILES = 30


def _conversation(i: int) -> dict[str, Any]:
    start = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    return {
        "tenant": "acme",
        "source_system": "bench",
        "external_interaction_id": f"CALL-{i:06d}",
        "channel": "voice",
        "direction": "inbound",
        "started_at": start,
        "ended_at": start + dt.timedelta(seconds=45),
        "agent_id": f"a-{i % 17}",
        "agent_name": f"Agent {i % 17}",
        "team": "Billing",
        "campaign": "winter",
        "ani": "+14155550100",
        "dnis": "+18005550100",
        "recording_ref": f"recordings/{i:06d}.wav",
        "transcript_ref": None,
        "turns": [],
        "metadata": {"disposition": "resolved"},
        "source": None,
    }


def raw_limit(kafka: str, topic: str) -> dict[str, float]:
    """Encode+produce and consume+decode the same records concurrently; return rates."""
    admin = AdminClient({"bootstrap.servers": kafka})
    ensure_topics(admin, [topic], 6, 1)
    consumed = 0
    done = threading.Event()
    first_seen: list[float] = []

    def consume() -> None:
        nonlocal consumed
        c = Consumer(
            {
                "bootstrap.servers": kafka,
                "group.id": f"raw-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe([topic])
        while consumed < RAW + 1:
            for msg in c.consume(1000, 0.5):
                if msg.error() is None:
                    CODEC.decode("callstream.Conversation", msg.value())
                    consumed += 1
                    if not first_seen:
                        first_seen.append(time.perf_counter())
        done.set()
        c.close()

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(3)  # let the consumer join its group before the clock starts
    p = Producer(
        {
            "bootstrap.servers": kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
        }
    )
    p.produce(
        topic, key=b"warm-up", value=CODEC.encode("callstream.Conversation", _conversation(-1))
    )
    p.flush(60)  # the idempotent producer's id is fetched before the clock starts
    t0 = time.perf_counter()
    for i in range(RAW):
        value = CODEC.encode("callstream.Conversation", _conversation(i))
        while True:
            try:
                p.produce(topic, key=f"acme/bench/CALL-{i}".encode(), value=value)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(60)
    produced_s = time.perf_counter() - t0
    done.wait(120)
    total_s = time.perf_counter() - t0
    reader.join()
    return {
        "produce_per_s": RAW / produced_s,
        "pipeline_per_s": RAW / total_s,
        "seconds": total_s,
    }


def _profile_summary(raw: Path, top: int = 12) -> list[str]:
    """Aggregate py-spy's collapsed stacks: self samples per function and per area."""
    own: collections.Counter[str] = collections.Counter()
    area: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] += n
        joined = ";".join(frames)
        for label, needle in (
            ("SFTP read + parse (connectors, streams.ingest)", "streams/ingest/"),
            ("case store + analysis (SQL, scoring)", "streams/cases/"),
            ("outbox relay", "publish_once"),
            ("Faust/aiokafka consuming", "aiokafka"),
            ("Avro encode/decode", "fastavro"),
            ("connector polling", "connectors/poller"),
        ):
            if needle in joined:
                area[label] += n
                break
        else:
            area["other (event loop, idle, logging)"] += n
    lines = [f"  {100 * n / total:5.1f}%  {label}" for label, n in area.most_common()]
    lines.append("  top functions by own samples:")
    lines += [f"  {100 * n / total:5.1f}%  {fn[:110]}" for fn, n in own.most_common(top)]
    return lines


@pytest.mark.benchmark
def test_pipeline_benchmark(
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    pg_server: PostgresServer,
    tmp_path: Path,
) -> None:
    raw = raw_limit(kafka, f"{prefix}.raw-limit")
    pg_server.reset()
    crm = connector("crm", sftp_config(sftp_server), interval_seconds=1, min_age_seconds=0)
    crm = crm.model_copy(update={"ingest": ParseSettings(source_system="bench")})
    settings = settings_for(
        kafka, prefix, tmp_path / "data", [crm], database_url=pg_server.async_url()
    )
    config = write_config(
        tmp_path / "callstream.yaml", settings.model_copy(update={"log_level": "WARNING"})
    )
    log = tmp_path / "service.log"
    topics = Topics(prefix)
    service = start_service(config, log)
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    arrivals = TopicReader(kafka, topics.file_arrivals)
    outcomes = TopicReader(kafka, topics.file_outcomes, "callstream.FileOutcome")
    profile = tmp_path / "profile.txt"
    spy: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while "callstream is running" not in log.read_text():
            assert service.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        data = conversations_csv(ROWS)
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(service.pid),
                "--format",
                "raw",
                "--rate",
                "50",
                "--nonblocking",
                "-o",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        u0 = time.perf_counter()
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "exports/20261120_bulk.csv", data)
        t0 = time.perf_counter()
        wall0 = dt.datetime.now(dt.UTC)
        deadline = time.monotonic() + 900
        while len(results.records) < ROWS:
            assert service.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            results.poll(0.5)
        t1 = time.perf_counter()
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        arrivals.poll(1)
        outcomes.poll(1)
        announced = arrivals.records[0]["announced_at"]
        decided = outcomes.records[0]["decided_at"]

        latencies = []
        for i in range(SMALL_FILES):
            one = conversations_csv(1, start=900_000 + i)
            with sftp_session(sftp_server) as sftp:
                upload(sftp, f"single/{i}.csv", one)
            s0 = time.perf_counter()
            ext = f"CALL-{900_000 + i:06d}"
            while not any(r["external_interaction_id"] == ext for r in results.records[-5:]):
                assert time.perf_counter() - s0 < 60, log.read_text()[-3000:]
                results.poll(0.02)
            latencies.append(time.perf_counter() - s0)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        for reader in (results, arrivals, outcomes):
            reader.close()

    e2e = ROWS / (t1 - t0)
    cases_s = t1 - t0 - (decided - wall0).total_seconds()
    q = statistics.quantiles(latencies, n=100)
    lines = [
        "",
        "callstream pipeline benchmark (one broker, 2 cores, PostgreSQL, OpenSSH sftp on loopback)",
        f"raw limit, confluent-kafka + fastavro, {RAW:,} Conversation records:",
        f"  produce (encode + send, idempotent, lz4)   {raw['produce_per_s']:>10,.0f} rec/s",
        f"  produce -> consume pipeline (+ decode)     {raw['pipeline_per_s']:>10,.0f} rec/s",
        f"end to end, {ROWS:,}-row CSV ({len(data) / 1e6:.1f} MB), upload took {t0 - u0:.1f} s:",
        f"  upload done -> last result on feedback     {t1 - t0:>10.1f} s",
        f"  conversations per second                   {e2e:>10,.0f} /s",
        f"  ratio to the raw pipeline limit            {e2e / raw['pipeline_per_s']:>10.1%}",
        "  stages (from event timestamps):",
        f"    upload done -> file announced      {(announced - wall0).total_seconds():>8.1f} s",
        f"    announced -> rows parsed+published {(decided - announced).total_seconds():>8.1f} s",
        f"    -> last result published           {cases_s:>8.1f} s",
        f"single small files, 1 s poll, {SMALL_FILES} files, upload -> result:",
        f"  p50 {q[49]:.2f} s   p99 {q[98]:.2f} s   min {min(latencies):.2f} s   "
        f"max {max(latencies):.2f} s",
        f"where the service process spends its time (py-spy, 50 Hz, during the {ROWS:,}-row run):",
        *(_profile_summary(profile) if profile.exists() else ["  (no profile written)"]),
    ]
    print("\n".join(lines))
    assert len({r["case_id"] for r in results.records}) == ROWS + SMALL_FILES
