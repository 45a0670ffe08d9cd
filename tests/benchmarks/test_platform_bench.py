"""Platform Kafka connector benchmark: prints figures, asserts nothing about speed.

One run, one platform broker (SASL/SCRAM listener, as callstream logs in), one callstream
broker, the service in this process:

1. events/s consumed from the platform cluster: 20,000 pre-encoded JSON events already on the
   platform topic; callstream's rate is measured on the platform group's committed offsets
   (an event counts once it is durably on callstream's conversations topic and committed),
   from the first commit to the last. The denominator: confluent-kafka consuming the same
   records from the same topic over the same listener, first to last message;
2. p50 / p99 latency from an event produced on the platform topic to its result on the
   platform's feedback topic, for 100 single events at 10/s once the backlog is drained.

    .venv/bin/pytest tests/benchmarks/test_platform_bench.py -s -q -p no:cacheprovider -m benchmark
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from fixtures import PLATFORM_PASSWORD, PLATFORM_USER
from platform_support import (
    FeedbackReader,
    committed,
    event,
    platform_connector,
    platform_settings,
    platform_topics,
    produce,
)
from report import p50_p99, print_table
from support import running

from streams.embedded.kafka import LocalKafka

pytestmark = pytest.mark.benchmark

EVENTS = 20_000
LATENCY_EVENTS = 100


def _raw_consume(broker: LocalKafka, topic: str, count: int) -> float:
    """Seconds confluent-kafka takes from the first to the last of ``count`` records."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.sasl_bootstrap_servers,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": PLATFORM_USER,
            "sasl.password": PLATFORM_PASSWORD,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen, first = 0, 0.0
    deadline = time.monotonic() + 60
    try:
        while seen < count:
            assert time.monotonic() < deadline, f"raw consumer saw {seen} of {count}"
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    if seen == 0:
                        first = time.perf_counter()
                    seen += 1
        return time.perf_counter() - first
    finally:
        consumer.close()


async def test_platform_event_to_feedback(
    kafka: str, platform_kafka: LocalKafka, tmp_path: Path
) -> None:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    events_topic, feedback_topic = f"{prefix}.events", f"{prefix}.feedback"
    platform_topics(platform_kafka, events_topic, feedback_topic)
    encoded = [(f"P-{i}".encode(), json.dumps(event(i)).encode()) for i in range(EVENTS)]
    produce(platform_kafka, events_topic, encoded)
    raw_seconds = _raw_consume(platform_kafka, events_topic, EVENTS)

    conn = platform_connector(platform_kafka, "plat", events_topic, feedback_topic)
    settings = platform_settings(kafka, prefix, tmp_path / "data", [conn])
    feedback = FeedbackReader(platform_kafka, feedback_topic)
    latencies: list[float] = []
    try:
        async with running(settings):
            first_at, first_n, done = 0.0, 0, 0
            deadline = time.monotonic() + 120
            while done < EVENTS:
                assert time.monotonic() < deadline, f"{done} of {EVENTS} committed"
                done = await asyncio.to_thread(
                    committed, platform_kafka, conn.group_id, events_topic
                )
                if done and not first_n:
                    first_at, first_n = time.perf_counter(), done
                await asyncio.sleep(0.05)
            ours = time.perf_counter() - first_at
            await feedback.wait_for(lambda rs: len(rs) >= EVENTS, 120)

            sent: dict[str, float] = {}
            stop = threading.Event()

            def read() -> None:
                while not stop.is_set():
                    feedback.poll(0.1)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            producer = Producer({"bootstrap.servers": platform_kafka.bootstrap_servers})
            for i in range(LATENCY_EVENTS):
                doc = event(i, conversationId=f"L-{i:04d}")
                producer.produce(events_topic, key=b"l", value=json.dumps(doc).encode())
                await asyncio.to_thread(producer.flush, 10)
                sent[f"L-{i:04d}"] = time.time()
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 60
            while True:
                arrived = {
                    key: at
                    for (key, _h, _r), at in zip(feedback.records, feedback.arrived, strict=True)
                    if key in sent
                }
                if len(arrived) >= LATENCY_EVENTS or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            stop.set()
            reader.join(5)
            latencies = sorted(arrived[k] - sent[k] for k in arrived)
    finally:
        feedback.close()

    measured = EVENTS - first_n
    ours_rate = measured / ours if ours > 0 else float("inf")
    raw_rate = EVENTS / raw_seconds
    p50, p99 = p50_p99(latencies)
    print_table(
        "platform Kafka connector",
        ["measure", "value"],
        [
            ["callstream events/s (consume, publish, commit)", f"{ours_rate:,.0f}"],
            ["confluent-kafka events/s (consume only)", f"{raw_rate:,.0f}"],
            ["ratio callstream / confluent-kafka", f"{ours_rate / raw_rate:.3f}"],
            ["event -> feedback p50 (ms)", f"{p50 * 1000:,.0f}"],
            ["event -> feedback p99 (ms)", f"{p99 * 1000:,.0f}"],
            ["latency samples", f"{len(latencies)} of {LATENCY_EVENTS}"],
        ],
        [
            f"{EVENTS:,} pre-encoded JSON events (~{len(encoded[0][1])} bytes) on 3 partitions; "
            "callstream's rate is from its first to its last committed offset on the platform "
            f"cluster ({measured:,} events), the service and its stream processors in this "
            "process; both consumers log in over SASL/SCRAM on the same broker.",
        ],
    )
