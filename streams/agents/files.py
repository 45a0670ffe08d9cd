"""Agent: file-arrival events -> parsed, validated conversations and dead letters."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import faust

from streams.agents.retry import until_done
from streams.app import raw_topic
from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.ingest.files import FileProcessor
from streams.runner import FILE_ARRIVAL
from streams.topics import Topics

log = logging.getLogger(__name__)


def register(app: faust.App, topics: Topics, codec: AvroCodec, processor: FileProcessor) -> None:
    """Attach the files agent to ``app``."""

    async def files(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            try:
                arrival = codec.decode(FILE_ARRIVAL, value)
            except SchemaError as exc:
                log.error("file-arrivals: undecodable event skipped: %s", exc)
                continue
            what = f"processing {arrival['tenant']}/{arrival['connector']}/{arrival['path']}"
            await until_done(what, functools.partial(processor.process, arrival))
            yield None

    app.agent(raw_topic(app, topics.file_arrivals), name="files")(files)
