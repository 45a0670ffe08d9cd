"""Agent: dead-letter topic -> ``dead_letters`` table (listing and replay through the API).

Each batch is written (insert-or-ignore by the deterministic dead-letter id) before Faust acks
it, so a kill redelivers what was not stored and nothing is stored twice. Transient database
failures are retried until they pass; a batch that keeps failing otherwise is written one
record at a time, and a record that cannot be stored alone is logged and counted
(``callstream_poison_records_total{stage="deadletters"}``): there is nowhere left to send it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.app import raw_topic
from streams.codec import AvroCodec
from streams.control import deadletters
from streams.deadletters import DEAD_LETTER
from streams.errors import SchemaError
from streams.failures import GaveUp, attempt
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics

log = logging.getLogger(__name__)


async def store(engine: AsyncEngine, records: list[dict[str, Any]], metrics: Metrics) -> None:
    """Write decoded dead letters under the failure policy (see the module doc)."""
    try:
        await attempt(
            f"recording {len(records)} dead letters",
            functools.partial(deadletters.record, engine, records),
            stage="deadletters",
            metrics=metrics,
        )
    except GaveUp as gave_up:
        if len(records) > 1:
            for one in records:
                await store(engine, [one], metrics)
            return
        metrics.poison_records.labels(stage="deadletters").inc()
        log.error("a dead letter of %s cannot be recorded: %s", records[0]["tenant"], gave_up)


def register(
    app: faust.App,
    topics: Topics,
    codec: AvroCodec,
    engine: AsyncEngine,
    metrics: Metrics,
    settings: ProcessorSettings,
) -> None:
    """Attach the dead-letters agent to ``app``."""

    async def dead_letter_log(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for values in stream.take(settings.batch_size, within=settings.batch_within_seconds):
            records = []
            for value in values:
                try:
                    records.append(codec.decode(DEAD_LETTER, bytes(value or b"")))
                except SchemaError as exc:
                    metrics.poison_records.labels(stage="deadletters").inc()
                    log.error("an undecodable dead-letter record was skipped: %s", exc)
            if records:
                await store(engine, records, metrics)
            yield None

    app.agent(raw_topic(app, topics.dead_letter), name="dead-letters")(dead_letter_log)
