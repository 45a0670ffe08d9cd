"""File -> ``conversations.v1`` against its peer: prints figures, asserts nothing about speed.

All on one broker, one run, one CSV of ``CALLSTREAM_INGEST_BENCH_ROWS`` rows (100,000 by default):

1. Kafka's limit: confluent-kafka producing pre-encoded ~280-byte records (encoded before the
   clock starts; idempotent, lz4, as callstream's producer) and consuming them back, records/s and
   MB/s each; separately the Avro encode cost of callstream's codec alone (records/s);
2. the peer: Kafka Connect 3.9.1 standalone + FilePulse reading the CSV from a local folder into
   a 6-partition topic (:mod:`filepulse_peer`), rows/s from the file's appearance (an atomic
   rename into the folder) until the topic's end offsets reach the row count;
3. callstream: the same CSV renamed into a local-folder connector's folder of a running service
   (its own process, as in production, PostgreSQL case store) until the conversations topic's end
   offsets reach the row count: rows/s and the ratio to the peer, the stages from event
   timestamps, the same stages timed in this process one after the other (read, parse +
   validate, encode, produce), and a py-spy profile of the service process.

``make bench-peer`` runs only the peer's figure (``CALLSTREAM_INGEST_BENCH_ONLY=peer``).
``CALLSTREAM_INGEST_BENCH_BASELINE=<checkout>`` also runs the service of another checkout (e.g.
``git worktree add /tmp/base main``) the same way, for a before/after in one run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from filepulse_peer import end_offsets, run_peer
from report import Area, profile_summary, target
from servers.postgres import PostgresServer
from support import (
    CODEC,
    TopicReader,
    arrival_topics,
    connector,
    conversations_csv,
    settings_for,
    start_service,
    write_config,
)

from connectors.local import LocalConfig
from streams.ingest.parse import ParseSettings, ParseStats, parse
from streams.ingest.records import CONVERSATION, conversation_record
from streams.kafka import Producer as CallstreamProducer
from streams.kafka import client_config
from streams.redact import Redactors
from streams.topics import LANES, Topics, ensure_topics

ROWS = int(os.environ.get("CALLSTREAM_INGEST_BENCH_ROWS", "100000"))
ONLY = os.environ.get("CALLSTREAM_INGEST_BENCH_ONLY", "")
BASELINE = os.environ.get("CALLSTREAM_INGEST_BENCH_BASELINE", "")
PARTITIONS = 6
RECORD_BYTES = 280


def _kafka_limit(kafka: str, topic: str) -> dict[str, float]:
    """Produce ``ROWS`` pre-encoded records, then consume them: rates of each."""
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), [topic], PARTITIONS, 1)
    values = [(f"acme/bench/CALL-{i:06d}".encode(), os.urandom(RECORD_BYTES)) for i in range(ROWS)]
    size = sum(len(k) + len(v) for k, v in values)
    p = Producer(
        {
            "bootstrap.servers": kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
        }
    )
    p.produce(topic, key=b"warm-up", value=b"x")
    p.flush(60)  # the idempotent producer's id is fetched before the clock starts
    t0 = time.perf_counter()
    for key, value in values:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)
    produce_s = time.perf_counter() - t0
    c = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"limit-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    first = c.consume(1, 30)  # joins the group before the clock starts
    consumed = len(first)
    t1 = time.perf_counter()
    while consumed < ROWS + 1:
        consumed += sum(1 for m in c.consume(10_000, 1) if m.error() is None)
    consume_s = time.perf_counter() - t1
    c.close()
    return {
        "produce_per_s": ROWS / produce_s,
        "produce_mb_s": size / produce_s / 1e6,
        "consume_per_s": ROWS / consume_s,
        "consume_mb_s": size / consume_s / 1e6,
    }


def _encode_cost(csv: bytes) -> dict[str, float]:
    """Records/s of callstream's Avro codec alone (validate + encode), on the CSV's rows."""
    rows = [r.conversation for r in parse(io.BytesIO(csv), "x.csv", ParseSettings())]
    convs = [
        {**c, "tenant": "acme", "source_system": "bench", "source": None, "redactions": {}}
        for c in rows
        if c is not None
    ]
    t0 = time.perf_counter()
    size = sum(len(CODEC.encode(CONVERSATION, c)) for c in convs)
    return {"per_s": len(convs) / (time.perf_counter() - t0), "bytes": size / len(convs)}


def _stages_in_process(kafka: str, prefix: str, csv: bytes, path: Path) -> dict[str, float]:
    """The stages of the file -> topic path, one after the other in this process (seconds)."""
    topics = Topics(f"{prefix}.stages")
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), [topics.conversations], 6, 1)
    path.write_bytes(csv)
    t0 = time.perf_counter()
    data = path.read_bytes()
    t1 = time.perf_counter()
    settings = ParseSettings(source_system="bench")
    rows = list(parse(io.BytesIO(data), "x.csv", settings, ParseStats()))
    t2 = time.perf_counter()
    redactors = Redactors({}, lambda _purpose: b"k" * 32)
    now = dt.datetime.now(dt.UTC)
    records = []
    for row in rows:
        assert row.conversation is not None
        conv = {
            **row.conversation,
            "tenant": "acme",
            "source_system": "bench",
            "source": {
                "file_id": "f",
                "connector": "c",
                "path": "x.csv",
                "row": row.row,
                "announced_at": now,
            },
        }
        records.append(conversation_record(CODEC, topics, conv, 1_000_000, redactors))
    t3 = time.perf_counter()

    async def produce() -> None:
        async with CallstreamProducer(client_config(kafka, {})) as producer:
            await producer.send_batch(records[:1])
            t = time.perf_counter()
            for i in range(0, len(records), 2000):
                await producer.send_batch(records[i : i + 2000])
            stamps.append(time.perf_counter() - t)

    stamps: list[float] = []
    asyncio.run(produce())
    return {
        "read": t1 - t0,
        "parse + validate": t2 - t1,
        "redact + encode": t3 - t2,
        "produce (2,000-record batches)": stamps[0],
    }


#: File -> topic stages: a sample counts in the first stage with a needle in one of its frames.
_STAGES: tuple[Area, ...] = (
    ("produce (streams/kafka.py, librdkafka)", ("streams/kafka.py", "_send_blocking")),
    ("redact + encode (codec, fastavro)", ("codec.py", "records.py", "redact.py")),
    ("validate (build_conversation, timestamps)", ("build_conversation",)),
    ("parse (CSV reader, lines)", ("ingest/parse.py",)),
    ("rows -> records (files.py)", ("ingest/files.py",)),
    ("list/fetch (connectors, local store)", ("connectors/",)),
    ("cases (processors downstream)", ("streams/cases/", "agents/cases")),
    ("Faust/aiokafka consuming", ("aiokafka",)),
)


def _profile_summary(raw: Path) -> list[str]:
    """Summarise the service process's py-spy profile by file -> topic stage."""
    return profile_summary(
        raw, _STAGES, other="other (event loop, idle threads, logging)", top=14, match=any
    )


def _callstream(
    kafka: str,
    prefix: str,
    csv: bytes,
    pg: PostgresServer,
    work: Path,
    checkout: Path | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Run the service (of ``checkout``, default this one) over a local folder; time the CSV's
    rename -> last conversation."""
    pg.reset()
    inbox, staging = work / "inbox", work / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    crm = connector("crm", LocalConfig(root=inbox), interval_seconds=1, min_age_seconds=0)
    crm = crm.model_copy(update={"ingest": ParseSettings(source_system="bench")})
    settings = settings_for(
        kafka,
        prefix,
        work / "data",
        [crm],
        database_url=pg.async_url(),
        kafka={"bootstrap_servers": kafka, "topic_prefix": prefix, "partitions": PARTITIONS},
    )
    config = write_config(
        work / "callstream.yaml", settings.model_copy(update={"log_level": "WARNING"})
    )
    if checkout is not None:  # a checkout from before the row worker does not know its setting
        fields = yaml.safe_load(config.read_text())
        fields["processors"].pop("row_worker_min_bytes")
        config.write_text(yaml.safe_dump(fields))
    log = work / "service.log"
    topics = Topics(prefix)
    service = start_service(config, log, cwd=checkout)
    arrivals = TopicReader(kafka, arrival_topics(prefix))  # a file over 1 MiB: the bulk lane
    outcomes = TopicReader(kafka, topics.file_outcomes, "callstream.FileOutcome")
    lanes = [topics.in_lane(lane).conversations for lane in LANES]
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{prefix}-offsets"})
    profile = work / "profile.txt"
    spy: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 90
        while "callstream is running" not in log.read_text():
            assert service.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        spy = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record"),
                *("--pid", str(service.pid), "--format", "raw", "--rate", "50"),
                *("--nonblocking", "--subprocesses", "-o", str(profile)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (staging / "20261120_bulk.csv").write_bytes(csv)
        wall0 = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        os.rename(staging / "20261120_bulk.csv", inbox / "20261120_bulk.csv")
        deadline = time.monotonic() + 900
        while sum(end_offsets(consumer, t, PARTITIONS) for t in lanes) < ROWS:
            assert service.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        deadline = time.monotonic() + 60
        while not (arrivals.records and outcomes.records):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            arrivals.poll(0.5)
            outcomes.poll(0.5)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        consumer.close()
        arrivals.close()
        outcomes.close()
    announced = (arrivals.records[0]["announced_at"] - wall0).total_seconds()
    outcome = outcomes.records[0]
    assert outcome["outcome"] == "processed" and outcome["rows_accepted"] == ROWS, outcome
    figures = {"rows_per_s": ROWS / seconds, "seconds": seconds, "announced": announced}
    return figures, (_profile_summary(profile) if profile.exists() else ["  (no profile)"])


@pytest.mark.benchmark
def test_ingest_benchmark(
    kafka: str, prefix: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    csv = conversations_csv(ROWS)
    mb = len(csv) / 1e6
    lines = ["", f"file -> topic benchmark, one broker, 2 cores, a {ROWS:,}-row CSV ({mb:.1f} MB)"]
    peer: dict[str, float] | None = None
    results: dict[str, float] | None = None
    if ONLY in ("", "kafka"):
        limit = _kafka_limit(kafka, f"{prefix}.kafka-limit")
        encode = _encode_cost(csv)
        lines += [
            f"Kafka's limit, confluent-kafka, {ROWS:,} pre-encoded {RECORD_BYTES}-byte records "
            "(idempotent, lz4, 6 partitions):",
            *(
                f"  {what}  {limit[f'{what}_per_s']:>10,.0f} rec/s  "
                f"{limit[f'{what}_mb_s']:>7.1f} MB/s"
                for what in ("produce", "consume")
            ),
            "Avro encode alone (streams/codec.py, strict: the compiled writer of "
            f"streams/avrowrite.py), {encode['bytes']:.0f}-byte Conversations:",
            f"  encode   {encode['per_s']:>10,.0f} rec/s",
        ]
    if ONLY in ("", "peer"):
        peer = run_peer(kafka, prefix, csv, ROWS, tmp_path / "peer")
        lines += [
            "peer: Kafka Connect 3.9.1 standalone + FilePulse 2.18.0, local folder -> "
            "6 partitions:",
            f"  file appears -> last row on the topic {peer['seconds']:>8.1f} s   "
            f"{peer['rows_per_s']:>8,.0f} rows/s",
            f"  JVM peak RSS {peer['rss_mib']:.0f} MiB, {peer['cpu_s']:.1f} CPU s",
        ]
    if ONLY in ("", "callstream"):
        stages = _stages_in_process(kafka, prefix, csv, tmp_path / "stages.csv")
        if BASELINE:
            base, _ = _callstream(
                kafka, f"{prefix}-base", csv, pg_server, tmp_path / "base", Path(BASELINE)
            )
            ratio = f"{base['rows_per_s'] / peer['rows_per_s']:.2f}" if peer else "n/a"
            lines += [
                f"callstream before ({BASELINE}), the same way:",
                f"  file appears -> last conversation on the topic {base['seconds']:>6.1f} s   "
                f"{base['rows_per_s']:>8,.0f} rows/s   ratio to the peer {ratio}",
            ]
        results, profile = _callstream(kafka, f"{prefix}-cs", csv, pg_server, tmp_path / "cs")
        ratio = f"{results['rows_per_s'] / peer['rows_per_s']:.2f}" if peer else "n/a"
        if peer:
            ratio += f" {target('> 1', results['rows_per_s'] > peer['rows_per_s'])}"
        lines += [
            "callstream: local-folder connector, running service (own process, PostgreSQL):",
            f"  file appears -> last conversation on the topic {results['seconds']:>6.1f} s   "
            f"{results['rows_per_s']:>8,.0f} rows/s   ratio to the peer {ratio}",
            f"  file appears -> announced (list)   {results['announced']:>6.1f} s",
            "  stages one after the other in this process (s; their sum is one core's work):",
            *(
                f"    {name:<32} {s:>6.2f} s  {ROWS / s:>10,.0f} rows/s"
                for name, s in stages.items()
            ),
            "  where the service spends its time (py-spy, 50 Hz, the service and its workers):",
            *profile,
        ]
    print("\n".join(lines))
    if peer is not None:
        assert peer["rows_per_s"] > 0
    if results is not None:
        assert results["rows_per_s"] > 0
