"""Agent: file-arrival events -> parsed, validated conversations and dead letters.

Failure policy (:mod:`streams.failures`): transient failures (store, broker, database down) are
retried until they pass; a file the policy gives up on is dead-lettered and reported
(:meth:`FileProcessor.fail`), so one file can never stall its partition. An event that cannot
be decoded is dead-lettered with its raw bytes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import faust

from streams.app import raw_topic
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.errors import SchemaError
from streams.failures import GaveUp, attempt
from streams.ingest.files import FileProcessor
from streams.kafka import Producer
from streams.metrics import Metrics
from streams.runner import FILE_ARRIVAL
from streams.settings import ProcessorSettings
from streams.topics import Topics

log = logging.getLogger(__name__)


def register(
    app: faust.App,
    topics: Topics,
    codec: AvroCodec,
    processor: FileProcessor,
    producer: Producer,
    metrics: Metrics,
    settings: ProcessorSettings,
) -> None:
    """Attach the files agent of ``topics.lane`` (it reads that lane's file arrivals) to ``app``,
    the Faust app of that lane (see :func:`streams.app.create_app`)."""
    dead: DeadLetters = processor.dead

    async def files(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        if settings.row_worker_min_bytes:  # large files then start at once
            try:
                await asyncio.to_thread(processor.row_worker.warm)
            except OSError as exc:
                log.warning("the row worker process cannot start (%s): files read in-process", exc)
        async for value in stream:
            try:
                arrival = codec.decode(FILE_ARRIVAL, value)
            except SchemaError as exc:
                record = dead.build(
                    tenant="",
                    connector="",
                    file_id="",
                    path="",
                    reason="undecodable_record",
                    message=f"file-arrival event: {exc}",
                    stage="files",
                    raw=bytes(value or b""),
                )
                await attempt(
                    "dead-lettering an undecodable file-arrival event",
                    functools.partial(producer.send_batch, [record]),
                    stage="files",
                    metrics=metrics,
                )
                yield None
                continue
            what = f"processing {arrival['tenant']}/{arrival['connector']}/{arrival['path']}"
            try:
                await attempt(
                    what,
                    functools.partial(processor.process, arrival),
                    stage="files",
                    metrics=metrics,
                    max_attempts=settings.max_attempts,
                )
            except GaveUp as gave_up:
                log.error("%s: dead-lettering the file: %s", what, gave_up)
                await attempt(
                    f"dead-lettering {arrival['path']}",
                    functools.partial(processor.fail, arrival, gave_up),
                    stage="files",
                    metrics=metrics,
                    max_attempts=10**9,  # transient only: the file's content cannot fail it
                )
            yield None

    topic = topics.file_arrivals
    app.agent(raw_topic(app, topic), name=f"files-{topics.lane}")(files)
