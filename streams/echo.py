"""Live view for the local stack: print each event of the callstream topics as it arrives.

A plain consumer in its own group that starts at the offsets of the moment it started, so a
user running ``callstream run`` sees what the service does without a Kafka client of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.runner import FILE_ARRIVAL
from streams.tasks import cancel_and_wait
from streams.topics import BULK, LIVE, Topics

log = logging.getLogger(__name__)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def describe(schema: str, event: dict[str, Any]) -> str:
    """Render an event of any callstream topic as one line."""
    if schema == FILE_ARRIVAL:
        return describe_arrival(event)
    if schema == "callstream.CaseEvent":
        return (
            f"case {event['kind']:<8}{event['tenant']}  {event['external_interaction_id']}  "
            f"version {event['version']}  case {event['case_id'][:12]}"
        )
    if schema == "callstream.AnalysisResult":
        verdict = "pass" if event["passed"] else "fail"
        return (
            f"result          {event['tenant']}  {event['external_interaction_id']}  "
            f"{event['overall_score']:.1f} ({verdict}, profile {event['profile_id']} "
            f"v{event['profile_version']})  result version {event['result_version']}"
        )
    if schema == "callstream.DeadLetter":
        where = f"row {event['row']}" if event["row"] is not None else "whole file"
        return (
            f"dead letter     {event['tenant']}/{event['connector']}  {event['path']} {where}  "
            f"{event['reason']}: {event['message']}"
        )
    return f"{schema}: {event}"


def describe_arrival(event: dict[str, Any]) -> str:
    """Render a FileArrival event as one line."""
    return (
        f"file announced  {event['tenant']}/{event['connector']}  {event['path']}  "
        f"{_human(event['size'])}  version {event['version']}  id {event['file_id'][:12]}"
    )


class Echo:
    """Prints events from the moment it started (see the module doc)."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topics: Topics,
        codec: AvroCodec,
        out: Callable[[str], None] = print,
    ) -> None:
        self._consumer = Consumer(
            {
                **client_config,
                "group.id": f"{topics.prefix}.echo-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        self._topics = topics
        self._codec = codec
        self._out = out
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="echo")
        self._task: asyncio.Task[None] | None = None

    def _from_start_time(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Topics created a moment ago may not have leaders yet (NOT_LEADER_FOR_PARTITION): try
        # again for a while. An exception must not escape: it would end the consumer's thread.
        wanted = [TopicPartition(tp.topic, tp.partition, self._started_ms) for tp in partitions]
        deadline = time.monotonic() + 30
        while True:
            try:
                found = consumer.offsets_for_times(wanted, timeout=10)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    log.warning("echo: %s; showing events from now on", exc)
                    found = [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in wanted]
                    break
                time.sleep(0.2)
        consumer.assign(found)

    async def start(self) -> None:
        """Subscribe and start printing events published from now on."""
        self._started_ms = int(time.time() * 1000)
        self._schemas = {
            self._topics.in_lane(LIVE).file_arrivals: FILE_ARRIVAL,
            self._topics.in_lane(BULK).file_arrivals: FILE_ARRIVAL,
            self._topics.cases: "callstream.CaseEvent",
            self._topics.analysis_results: "callstream.AnalysisResult",
            self._topics.dead_letter: "callstream.DeadLetter",
        }
        self._consumer.subscribe(list(self._schemas), on_assign=self._from_start_time)
        self._task = asyncio.create_task(self._loop(), name="echo")

    async def stop(self) -> None:
        """Stop printing."""
        await cancel_and_wait(self._task)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._consumer.close)
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msgs = await loop.run_in_executor(self._executor, self._consumer.consume, 100, 0.5)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                schema = self._schemas[msg.topic() or ""]
                try:
                    event = self._codec.decode(schema, msg.value() or b"")
                except SchemaError as exc:
                    log.warning("echo: %s", exc)
                    continue
                self._out(describe(schema, event))
