"""Kafka clients: an asyncio facade over confluent-kafka's idempotent producer.

librdkafka is thread-safe; batches are produced and flushed in an executor thread so the event
loop never blocks. The producer is idempotent (``enable.idempotence``, ``acks=all``): retries
inside librdkafka never duplicate a record. A batch either completes (every record acknowledged)
or raises :class:`~streams.errors.PublishError`; the caller then retries the whole batch, which
may duplicate the records that did get through (at-least-once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _RdProducer

from streams import security
from streams.errors import CallstreamError, ConfigError, PublishError

T = TypeVar("T")

Record = tuple[str, bytes, bytes]
"""(topic, key, value)"""
Headers = list[tuple[str, str | bytes | None]]
HeaderRecord = tuple[str, bytes, bytes, Headers]
"""(topic, key, value, headers)"""


RDKAFKA_LOG = logging.getLogger("librdkafka")


def client_config(bootstrap: str, extra: Mapping[str, str]) -> dict[str, Any]:
    """Return the common librdkafka settings plus the operator's extra properties.

    librdkafka's own log lines go through the ``librdkafka`` Python logger instead of stderr.
    """
    return {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG, **extra}


class KafkaUnreachable(CallstreamError):
    """No broker answered a metadata request in time (network, address or broker down)."""

    retriable = True


# librdkafka reports a refused login or TLS handshake with these codes; retrying cannot help.
_REFUSALS = {
    KafkaError._AUTHENTICATION: "the broker refused the login",
    KafkaError._SSL: "the TLS handshake failed",
    KafkaError.SASL_AUTHENTICATION_FAILED: "the broker refused the login",
}


def check_connection(
    config: Mapping[str, Any], timeout: float = 30.0, *, field: str = "kafka.client_config"
) -> None:
    """Fetch metadata once with ``config``; fail fast and clearly if Kafka refuses us.

    Raises :class:`~streams.errors.ConfigError` naming ``field`` as soon as the
    broker refuses the credentials or the TLS handshake (instead of librdkafka retrying the
    login every few hundred milliseconds), and :class:`KafkaUnreachable` when no broker answered
    within ``timeout``. Blocking: run it in an executor.
    """
    from confluent_kafka.admin import AdminClient

    refused: list[KafkaError] = []
    admin_config: dict[str, Any] = {**config, "error_cb": refused.append}
    admin = AdminClient(admin_config)
    bootstrap = config.get("bootstrap.servers")
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, left)))
            return
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args else exc
        admin.poll(0)  # serves error_cb
        for err in refused:
            if err.code() in _REFUSALS:
                sec = security.parse({k: v for k, v in config.items() if isinstance(v, str)})
                who = f" as {sec.username!r} ({sec.mechanism})" if sec.uses_sasl else ""
                raise ConfigError(
                    [
                        f"{field}: {_REFUSALS[err.code()]} at {bootstrap}{who} "
                        f"over {sec.protocol}: {err.str()}"
                    ]
                )
        if left <= 0:
            detail = refused[-1].str() if refused else last
            where = "kafka" if field == "kafka.client_config" else field
            raise KafkaUnreachable(
                f"{where}: no broker at {bootstrap} answered within {timeout:.0f}s: {detail}"
            )


class Producer:
    """Idempotent producer with an awaitable, all-or-error batch send."""

    def __init__(self, config: Mapping[str, Any], *, flush_timeout: float = 60.0) -> None:
        self._config = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
            "message.timeout.ms": int(flush_timeout * 1000),
            **config,
        }
        self._flush_timeout = flush_timeout
        self._producer: _RdProducer | None = None
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kafka-produce")

    async def start(self) -> None:
        """Create the librdkafka producer."""
        self._producer = _RdProducer(self._config)

    async def stop(self) -> None:
        """Flush what is pending and release the client."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.get_running_loop().run_in_executor(
                self._executor, producer.flush, self._flush_timeout
            )
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send_batch(self, records: Sequence[Record | HeaderRecord]) -> None:
        """Publish every record (with its headers, when given) and return once all are
        acknowledged by the broker."""
        if not records:
            return
        if self._producer is None:
            raise PublishError("producer is not started", retriable=False)
        producer = self._producer
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._send_blocking, producer, records
        )

    def _send_blocking(
        self, producer: _RdProducer, records: Sequence[Record | HeaderRecord]
    ) -> None:
        lock = threading.Lock()
        errors: list[KafkaError] = []
        remaining = [len(records)]
        done = threading.Event()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            with lock:
                if err is not None:
                    errors.append(err)
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        refused: KafkaError | None = None
        for i, record in enumerate(records):
            topic, key, value = record[0], record[1], record[2]
            headers = record[3] if len(record) > 3 else None
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: serve callbacks, then retry
                except KafkaException as exc:  # refused locally, e.g. MSG_SIZE_TOO_LARGE
                    refused = exc.args[0]
                    break
            if refused is not None:
                with lock:  # wait only for the records that were queued
                    remaining[0] -= len(records) - i
                    if remaining[0] == 0:
                        done.set()
                break
        while not done.is_set():
            producer.poll(0.05)
            if producer.flush(0) == 0 and not done.is_set():
                done.wait(0.05)
        if refused is not None:
            raise PublishError(
                f"a record was refused before sending: {refused.str()}",
                retriable=refused.retriable(),
                code=refused.name(),
            )
        if errors:
            first = errors[0]
            raise PublishError(
                f"{len(errors)} of {len(records)} records not acknowledged: {first.str()}",
                retriable=first.retriable(),
                code=first.name(),
            )


def session_config(timeout_seconds: float) -> dict[str, int]:
    """Consumer group settings under which a dead member's partitions move to another member
    after ``timeout_seconds`` (librdkafka's default is 45 s), heartbeating four times in it."""
    ms = int(timeout_seconds * 1000)
    return {"session.timeout.ms": ms, "heartbeat.interval.ms": max(1, ms // 4)}


def position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message that carries no error."""
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    """The offsets to commit once ``msgs`` are done: per partition, the last offset + 1."""
    ends: dict[tuple[str, int], int] = {}
    for msg in msgs:
        topic, partition, offset = position(msg)
        ends[(topic, partition)] = max(ends.get((topic, partition), -1), offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in ends.items()]


def take(consumer: Consumer, most: int, wait: float) -> list[Message]:
    """Return up to ``most`` messages: wait up to ``wait`` seconds for the first, then take
    only what has already arrived (``consume(n, t)`` would wait to fill the batch: latency)."""
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def commit_sync(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """Commit ``offsets`` and wait for the answer (blocking); raise :class:`KafkaException`
    when the group refused any partition (a synchronous commit reports each one's error)."""
    commit: Callable[..., list[TopicPartition] | None] = consumer.commit
    done = commit(offsets=offsets, asynchronous=False) or []
    failed = [tp for tp in done if tp.error is not None]
    if failed:
        raise KafkaException(failed[0].error)


class ConsumerThread:
    """A librdkafka consumer driven from asyncio: every call to it runs in this object's one
    thread, one at a time, never on the event loop.

    :meth:`subscribe` creates and subscribes the consumer; :meth:`close` leaves the group and
    ends the thread. Once closed, :meth:`take` finds nothing and :meth:`commit` commits nothing
    (what was not committed is redelivered to the group).
    """

    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._consumer: Consumer | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call in the consumer's thread."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def subscribe(
        self, config: Mapping[str, Any], topics: list[str], **callbacks: Any
    ) -> None:
        """Create the consumer and subscribe it to ``topics`` (``on_assign``, ``on_revoke``,
        ``on_lost``: librdkafka's rebalance callbacks, called in the consumer's thread)."""
        consumer = await self.run(Consumer, dict(config))
        await self.run(consumer.subscribe, topics, **callbacks)
        self._consumer = consumer

    async def take(self, most: int, wait: float) -> list[Message]:
        """Up to ``most`` messages, see :func:`take` (none once closed)."""
        consumer = self._consumer
        return [] if consumer is None else await self.run(take, consumer, most, wait)

    async def commit(self, msgs: list[Message]) -> bool:
        """Commit the offsets after ``msgs`` synchronously; False when closed meanwhile (the
        messages are then redelivered). Raises :class:`KafkaException` when the group refuses
        (a rebalance took a partition: its messages are redelivered to the new owner)."""
        consumer = self._consumer
        if consumer is None:
            return False
        await self.run(commit_sync, consumer, next_offsets(msgs))
        return True

    async def close(self) -> None:
        """Leave the group and end the thread."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await self.run(consumer.close)
        self._thread.shutdown(wait=False)
