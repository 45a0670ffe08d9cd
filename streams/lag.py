"""Consumer lag of callstream's own consumer groups, sampled into a gauge.

Lag = high watermark - committed offset, summed over a topic's partitions. Sampled every
``interval`` seconds in a thread (librdkafka calls block).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.metrics import Metrics
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class LagMonitor:
    """Publishes ``callstream_consumer_lag_messages{group, topic}``."""

    def __init__(
        self,
        client_config: dict[str, Any],
        metrics: Metrics,
        groups: dict[str, list[str]],
        interval: float = 10.0,
    ) -> None:
        self._config = client_config
        self._metrics = metrics
        self._groups = groups
        self._interval = interval
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lag")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.create_task(self._loop(), name="lag-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        await cancel_and_wait(self._task)
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self.sample)
            except KafkaException as exc:
                log.warning("consumer lag: %s", exc)
            await asyncio.sleep(self._interval)

    def sample(self) -> dict[tuple[str, str], int]:
        """Measure every group's lag per topic now."""
        out: dict[tuple[str, str], int] = {}
        for group, topics in self._groups.items():
            consumer = Consumer({**self._config, "group.id": group, "enable.auto.commit": False})
            try:
                meta = consumer.list_topics(timeout=10)
                for topic in topics:
                    if topic not in meta.topics:
                        continue
                    tps = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
                    committed = consumer.committed(tps, timeout=10)
                    lag = 0
                    for tp in committed:
                        _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                        lag += high - tp.offset if tp.offset >= 0 else high - _low
                    out[(group, topic)] = lag
                    self._metrics.consumer_lag.labels(group=group, topic=topic).set(lag)
            finally:
                consumer.close()
        return out
