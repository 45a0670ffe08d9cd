"""Send the analysis results of platform conversations back to each platform's feedback topic.

Contract of :class:`FeedbackRelay` (one per process, when any connector has a
``feedback_topic``):

- consumes callstream's own ``analysis-results`` topic in its own consumer group
  (``<prefix>.platform-feedback``; the blocking consumer runs in its own thread);
- keeps a result only when the case version it analyses was read from a platform connector:
  ``case_versions.source`` (written in the same transaction as the result) names the connector
  and a ``pk_`` partition file id; the result's tenant must be that connector's tenant;
- produces it to that connector's ``feedback_topic`` *on the platform cluster* with an
  idempotent producer: key = the platform's conversation id (``external_interaction_id``),
  headers ``idempotency-key`` (the result's), ``case-id`` and ``tenant``; value = the
  ``callstream.AnalysisResult`` record (Avro as on callstream's topic, or JSON);
- waits for the platform's acknowledgement (retried with back-off until it comes), then commits
  its own offsets. A crash before the commit re-sends the batch with the same idempotency keys:
  every result is delivered at least once, duplicates carry the key a consumer dedupes on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.cases.store import PLATFORM_PARTITION_PREFIX, case_versions
from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.failures import GaveUp, attempt
from streams.kafka import HeaderRecord, Headers, Producer, next_offsets, take
from streams.metrics import Metrics
from streams.platform.decode import plain
from streams.platform.inbound import platform_config
from streams.platform.settings import PlatformConnectorSettings
from streams.tasks import cancel_and_wait
from streams.topics import Topics

log = logging.getLogger(__name__)

ANALYSIS_RESULT = "callstream.AnalysisResult"
STAGE = "platform-feedback"
_FOREVER = 10**9


@dataclass
class Target:
    """One connector's way back: its settings and its producer on the platform cluster."""

    tenant: str
    connector: PlatformConnectorSettings
    producer: Producer


def feedback_record(target: Target, result: dict[str, Any], value: bytes) -> HeaderRecord:
    """The feedback record of one result (see the module doc)."""
    topic = target.connector.feedback_topic or ""  # targets are made only for set topics
    if target.connector.feedback_format == "json":
        value = json.dumps(plain(result), sort_keys=True).encode()
    headers: Headers = [
        ("idempotency-key", result["idempotency_key"].encode()),
        ("case-id", result["case_id"].encode()),
        ("tenant", result["tenant"].encode()),
    ]
    return (topic, result["external_interaction_id"].encode(), value, headers)


class FeedbackRelay:
    """Relays platform conversations' results to their platforms (see the module doc)."""

    def __init__(
        self,
        connectors: list[tuple[str, PlatformConnectorSettings]],
        own_config: dict[str, Any],
        topics: Topics,
        codec: AvroCodec,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        batch_size: int = 500,
    ) -> None:
        self.connectors = [(t, c) for t, c in connectors if c.feedback_topic]
        self.own_config = own_config
        self.topics = topics
        self.codec = codec
        self.engine = engine
        self.metrics = metrics
        self.batch_size = batch_size
        self.targets: dict[tuple[str, str], Target] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="platform-feedback")
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start one producer per connector, subscribe, and start relaying."""
        for tenant, conn in self.connectors:
            producer = Producer(platform_config(tenant, conn))
            await producer.start()
            self.targets[(tenant, conn.name)] = Target(tenant, conn, producer)
        config = {
            **self.own_config,
            "group.id": f"{self.topics.prefix}.platform-feedback",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        loop = asyncio.get_running_loop()
        self._consumer = await loop.run_in_executor(self._thread, Consumer, config)
        await loop.run_in_executor(
            self._thread, self._consumer.subscribe, [self.topics.analysis_results]
        )
        self._task = asyncio.create_task(self._loop(), name="platform-feedback")

    async def stop(self) -> None:
        """Stop relaying (uncommitted results are sent again on restart)."""
        await cancel_and_wait(self._task)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.get_running_loop().run_in_executor(self._thread, consumer.close)
        for target in self.targets.values():
            await target.producer.stop()
        self._thread.shutdown(wait=False)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        if consumer is None:
            return
        while True:
            msgs = await loop.run_in_executor(self._thread, take, consumer, self.batch_size, 0.5)
            batch = [m for m in msgs if m.error() is None]
            for m in msgs:
                if m.error() is not None:
                    log.warning("platform feedback: reading results: %s", m.error())
            if batch:
                await self.handle(batch)

    async def handle(self, batch: list[Message]) -> None:
        """Send one batch's platform results, wait for the acknowledgements, commit."""
        results: list[tuple[dict[str, Any], bytes]] = []
        for msg in batch:
            value = msg.value() or b""
            try:
                results.append((self.codec.decode(ANALYSIS_RESULT, value), value))
            except SchemaError as exc:
                self.metrics.poison_records.labels(stage=STAGE).inc()
                log.error(
                    "platform feedback: undecodable result at %s/%d@%d: %s",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    exc,
                )
        origins = await attempt(
            "reading the sources of analysed case versions",
            functools.partial(self._origins, {r["case_id"] for r, _v in results}),
            stage=STAGE,
            metrics=self.metrics,
            max_attempts=_FOREVER,
        )
        outgoing: dict[tuple[str, str], list[HeaderRecord]] = defaultdict(list)
        for result, value in results:
            origin = origins.get((result["case_id"], result["case_version"]))
            if origin is None:
                continue
            target = self.targets.get((result["tenant"], origin))
            if target is not None:
                outgoing[(target.tenant, target.connector.name)].append(
                    feedback_record(target, result, value)
                )
        for key, records in outgoing.items():
            await self._deliver(self.targets[key], records)
        if self._consumer is None:
            return  # stopped meanwhile: the batch is sent again on restart
        commit = functools.partial(
            self._consumer.commit, offsets=next_offsets(batch), asynchronous=False
        )
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, commit)
        except KafkaException as exc:
            log.warning("platform feedback: commit failed (%s); results are sent again", exc)

    async def _origins(self, ids: set[str]) -> dict[tuple[str, int], str]:
        """Map (case id, version) -> platform connector name, for versions read from one."""
        if not ids:
            return {}
        stmt = select(
            case_versions.c.case_id, case_versions.c.version, case_versions.c.source
        ).where(
            case_versions.c.case_id.in_(sorted(ids)),
            case_versions.c.file_id.startswith(PLATFORM_PARTITION_PREFIX),
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        out = {}
        for row in rows:
            source = json.loads(row.source) if row.source else {}
            if source.get("connector"):
                out[(row.case_id, row.version)] = str(source["connector"])
        return out

    async def _deliver(self, target: Target, records: list[HeaderRecord]) -> None:
        """Produce until the platform acknowledges; one it refuses for good is logged, skipped."""
        what = f"delivering {len(records)} results to {target.tenant}/{target.connector.name}"
        try:
            await attempt(
                what,
                functools.partial(target.producer.send_batch, records),
                stage=STAGE,
                metrics=self.metrics,
                max_attempts=_FOREVER,
            )
        except GaveUp:
            for record in records:
                try:
                    await attempt(
                        what,
                        functools.partial(target.producer.send_batch, [record]),
                        stage=STAGE,
                        metrics=self.metrics,
                        max_attempts=_FOREVER,
                    )
                except GaveUp as exc:
                    self.metrics.poison_records.labels(stage=STAGE).inc()
                    log.error(
                        "platform feedback: result for %r refused for good: %s", record[1], exc
                    )
                    continue
        self.metrics.platform_feedback.labels(
            tenant=target.tenant, connector=target.connector.name
        ).inc(len(records))
