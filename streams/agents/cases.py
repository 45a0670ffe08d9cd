"""Agent: conversations -> cases (opened / updated / duplicate), analysis, outbox."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust

from streams.agents.retry import until_done
from streams.app import raw_topic
from streams.cases.store import CaseStore, OutboxRelay
from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics

log = logging.getLogger(__name__)

CONVERSATION = "callstream.Conversation"


def register(
    app: faust.App,
    topics: Topics,
    codec: AvroCodec,
    store: CaseStore,
    relay: OutboxRelay,
    metrics: Metrics,
    settings: ProcessorSettings,
) -> None:
    """Attach the cases agent to ``app``."""

    async def cases(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in stream.take(settings.batch_size, within=settings.batch_within_seconds):
            conversations: list[dict[str, Any]] = []
            for value in batch:
                try:
                    conversations.append(codec.decode(CONVERSATION, value))
                except SchemaError as exc:
                    log.error("conversations: undecodable record skipped: %s", exc)
            outcome = await until_done(
                f"storing {len(conversations)} conversations",
                functools.partial(store.apply, conversations),
            )
            for counter, metric in (
                (outcome.opened, metrics.cases_opened),
                (outcome.updated, metrics.cases_updated),
                (outcome.duplicates, metrics.duplicates_absorbed),
            ):
                for tenant, n in counter.items():
                    metric.labels(tenant=tenant).inc(n)
            relay.wake()
            yield None

    app.agent(raw_topic(app, topics.conversations), name="cases")(cases)
