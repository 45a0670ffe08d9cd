"""Agent: conversations -> cases (opened / updated / duplicate), analysis, outbox.

Failure policy (:mod:`streams.failures`): a batch whose store write fails transiently is retried
until it passes; one that keeps failing otherwise is bisected until the poison conversation is
alone, which is dead-lettered (``processing_failed``, with the error and the raw record) while
the rest of the batch is stored. No conversation can stall its partition.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust

from streams.app import raw_topic
from streams.cases.store import BatchOutcome, CaseStore, OutboxRelay
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.errors import SchemaError
from streams.failures import GaveUp, attempt
from streams.kafka import Producer
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics

log = logging.getLogger(__name__)

CONVERSATION = "callstream.Conversation"


class CaseWriter:
    """Stores batches of conversations under the failure policy (see the module doc)."""

    def __init__(
        self,
        store: CaseStore,
        producer: Producer,
        dead: DeadLetters,
        metrics: Metrics,
        settings: ProcessorSettings,
    ) -> None:
        self.store = store
        self.producer = producer
        self.dead = dead
        self.metrics = metrics
        self.settings = settings

    async def write(self, batch: list[tuple[dict[str, Any], bytes]]) -> BatchOutcome:
        """Store ``(conversation, raw record)`` pairs; dead-letter what cannot be stored."""
        if not batch:
            return BatchOutcome()
        try:
            return await attempt(
                f"storing {len(batch)} conversations",
                functools.partial(self.store.apply, [conv for conv, _raw in batch]),
                stage="cases",
                metrics=self.metrics,
                max_attempts=self.settings.max_attempts,
            )
        except GaveUp as gave_up:
            if len(batch) == 1:
                await self._poison(batch[0], gave_up)
                return BatchOutcome()
            log.warning("bisecting a batch of %d conversations: %s", len(batch), gave_up)
            mid = len(batch) // 2
            outcome = await self.write(batch[:mid])
            outcome.add(await self.write(batch[mid:]))
            return outcome

    async def _poison(self, item: tuple[dict[str, Any], bytes], error: GaveUp) -> None:
        conv, raw = item
        source = conv.get("source") or {}
        self.metrics.poison_records.labels(stage="cases").inc()
        log.error(
            "conversation %s/%s cannot be stored; dead-lettered: %s",
            conv.get("tenant"),
            conv.get("external_interaction_id"),
            error,
        )
        await self.dead_letter(
            tenant=conv.get("tenant", ""),
            connector=source.get("connector", ""),
            file_id=source.get("file_id", ""),
            path=source.get("path", ""),
            row=source.get("row"),
            reason="processing_failed",
            message=str(error),
            raw=raw,
        )

    async def dead_letter(self, **fields: Any) -> None:
        """Publish one dead letter of this stage (retried while Kafka is down)."""
        record = self.dead.build(stage="cases", **fields)
        await attempt(
            "publishing a dead letter",
            functools.partial(self.producer.send_batch, [record]),
            stage="cases",
            metrics=self.metrics,
            max_attempts=10**9,
        )


def register(
    app: faust.App,
    topics: Topics,
    codec: AvroCodec,
    writer: CaseWriter,
    relay: OutboxRelay,
    metrics: Metrics,
    settings: ProcessorSettings,
) -> None:
    """Attach the cases agent of ``topics.lane`` (it reads that lane's conversations) to ``app``,
    the Faust app of that lane (see :func:`streams.app.create_app`)."""

    async def cases(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for values in stream.take(settings.batch_size, within=settings.batch_within_seconds):
            batch: list[tuple[dict[str, Any], bytes]] = []
            for value in values:
                raw = bytes(value or b"")
                try:
                    batch.append((codec.decode(CONVERSATION, raw), raw))
                except SchemaError as exc:
                    await writer.dead_letter(
                        tenant="",
                        connector="",
                        file_id="",
                        path="",
                        reason="undecodable_record",
                        message=f"conversation record: {exc}",
                        raw=raw,
                    )
            outcome = await writer.write(batch)
            for counter, metric in (
                (outcome.opened, metrics.cases_opened),
                (outcome.updated, metrics.cases_updated),
                (outcome.duplicates, metrics.duplicates_absorbed),
            ):
                for tenant, n in counter.items():
                    metric.labels(tenant=tenant).inc(n)
            relay.wake()
            yield None

    app.agent(raw_topic(app, topics.conversations), name=f"cases-{topics.lane}")(cases)
