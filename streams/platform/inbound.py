"""Consume one platform connector's events and publish them as conversations.

Contract of :class:`PlatformInbound` (one per enabled connector):

- at start, one metadata request checks the platform cluster accepts the connector's login: a
  refused login or TLS handshake fails the service start with a
  :class:`~streams.errors.ConfigError` naming ``tenants[<tenant>].platform_connectors[<name>]``
  (an unreachable cluster is logged and retried, it does not stop the service);
- the blocking librdkafka consumer runs in its own thread (one call at a time), never on the
  event loop; ``enable.auto.commit`` is off;
- per batch: decode and map every event (a worker thread: CPU and, for large raw inputs, the
  media store), publish the conversations *and* the dead letters of bad events to callstream's
  own cluster with the idempotent producer, wait for every acknowledgement, and only then commit
  the batch's offsets on the platform cluster, synchronously. A crash anywhere before the commit
  redelivers the batch; each redelivered event has the same delivery key (topic partition +
  offset, :mod:`streams.platform.convert`), so the case store applies it once: no event lost,
  none counted twice;
- a bad event (not JSON / not the Avro schema, missing or invalid fields, another tenant) is
  dead-lettered with its reason code and raw value (stage ``platform``) and its offset is
  committed with the rest: it never blocks the partition;
- a publish that fails transiently (callstream's broker down) is retried forever with back-off;
  nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.failures import GaveUp, attempt
from streams.ingest.parse import RowInvalid
from streams.kafka import (
    ConsumerThread,
    KafkaUnreachable,
    Producer,
    Record,
    check_connection,
    client_config,
    position,
    session_config,
)
from streams.metrics import Metrics
from streams.platform.convert import EventRef, event_record, partition_file_id
from streams.platform.decode import EventInvalid, ValueDecoder
from streams.platform.settings import PlatformConnectorSettings
from streams.redact import Redactors
from streams.tasks import cancel_and_wait
from streams.topics import Topics

log = logging.getLogger(__name__)

STAGE = "platform"
_FOREVER = 10**9

Judged = tuple[EventRef, bytes | None, Record]
"""One event of a batch: where it was read, its raw value, and its record (conversation or
dead letter)."""


def connector_field(tenant: str, name: str) -> str:
    """The config path naming a platform connector in errors."""
    return f"tenants[{tenant}].platform_connectors[{name}]"


def platform_config(tenant: str, connector: PlatformConnectorSettings) -> dict[str, Any]:
    """librdkafka settings reaching the platform cluster as this connector."""
    return {
        **client_config(connector.bootstrap_servers, connector.client_properties()),
        "client.id": f"callstream-{tenant}-{connector.name}",
    }


class PlatformInbound:
    """Consumes one platform connector (see the module doc); ``start()``/``stop()``."""

    def __init__(
        self,
        tenant: str,
        connector: PlatformConnectorSettings,
        *,
        producer: Producer,
        codec: AvroCodec,
        topics: Topics,
        dead: DeadLetters,
        metrics: Metrics,
        max_record_bytes: int,
        redactors: Redactors,
        decoder: ValueDecoder | None = None,
    ) -> None:
        self.tenant = tenant
        self.connector = connector
        self.producer = producer
        self.codec = codec
        self.topics = topics
        self.dead = dead
        self.metrics = metrics
        self.max_record_bytes = max_record_bytes
        self.redactors = redactors
        self.decoder = decoder or ValueDecoder(connector)
        self.label = connector_field(tenant, connector.name)
        self._consumer = ConsumerThread(f"platform-{connector.name}")
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = float("-inf")

    async def start(self) -> None:
        """Check the login, subscribe, and start consuming."""
        base = platform_config(self.tenant, self.connector)
        try:
            await self._consumer.run(check_connection, base, 15.0, field=self.label)
        except KafkaUnreachable as exc:
            log.error("%s; consuming anyway, librdkafka keeps retrying", exc)
        config = {
            **base,
            "group.id": self.connector.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._on_error,
            **session_config(self.connector.session_timeout_seconds),
        }
        await self._consumer.subscribe(config, self.connector.topics)
        self._task = asyncio.create_task(self._loop(), name=f"platform-{self.connector.name}")

    async def stop(self) -> None:
        """Stop consuming (uncommitted events are redelivered) and leave the group."""
        await cancel_and_wait(self._task)
        await self._consumer.close()

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (login refused, brokers down): a line a minute."""
        now = time.monotonic()
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            log.error("%s: platform cluster: %s", self.label, err.str())

    async def _loop(self) -> None:
        while True:
            msgs = await self._consumer.take(self.connector.batch_size, 0.5)
            events = []
            for msg in msgs:
                err = msg.error()
                if err is None:
                    events.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    self._on_error(err)
            if events:
                await self.handle(events)

    async def handle(self, events: list[Message]) -> None:
        """Publish one batch's conversations and dead letters, then commit its offsets."""
        n = len(events)
        await attempt(
            "fetching writer schemas from the schema registry",
            functools.partial(self.decoder.prepare, [m.value() for m in events]),
            stage=STAGE,
            metrics=self.metrics,
            max_attempts=_FOREVER,
        )
        records, accepted = await asyncio.to_thread(self._judge, events)
        await self._publish(records)
        self.metrics.records_accepted.labels(tenant=self.tenant, connector=self.connector.name).inc(
            accepted
        )
        try:
            await self._consumer.commit(events)  # False: stopped meanwhile, redelivered
        except KafkaException as exc:  # e.g. a rebalance took the partition: redelivered
            log.warning(
                "%s: committing %d events failed (%s); redelivery is idempotent", self.label, n, exc
            )

    async def _publish(self, judged: list[Judged]) -> None:
        """Publish until acknowledged. A record Kafka refuses for good (not a broker outage:
        those are retried forever) is replaced by a dead letter ``publish_refused`` keeping the
        event's raw value, so the event is never skipped silently."""
        records = [record for _ref, _value, record in judged]
        try:
            await self._send(f"publishing {len(records)} platform events", records)
        except GaveUp:
            for ref, value, record in judged:
                try:
                    await self._send("publishing a platform event", [record])
                except GaveUp as exc:
                    self.metrics.poison_records.labels(stage=STAGE).inc()
                    log.error("%s: the record of %s was refused: %s", self.label, ref.path, exc)
                    dead = self._dead(ref, value, "publish_refused", f"Kafka refused it: {exc}")
                    await self._send("dead-lettering a refused platform event", [dead])

    async def _send(self, what: str, records: list[Record]) -> None:
        await attempt(
            what,
            functools.partial(self.producer.send_batch, records),
            stage=STAGE,
            metrics=self.metrics,
            max_attempts=_FOREVER,
        )

    def _judge(self, events: list[Message]) -> tuple[list[Judged], int]:
        """Return each event of one batch with its record (a conversation or a dead letter) and
        how many were accepted (worker thread)."""
        records: list[Judged] = []
        accepted = 0
        for msg in events:
            kind, stamp = msg.timestamp()
            when = (
                dt.datetime.fromtimestamp(stamp / 1000, dt.UTC) if kind else dt.datetime.now(dt.UTC)
            )
            ref = EventRef(*position(msg), when)
            value = msg.value()
            try:
                doc = self.decoder.decode(value)
                record = event_record(
                    doc,
                    self.tenant,
                    self.connector,
                    ref,
                    self.codec,
                    self.topics,
                    self.max_record_bytes,
                    self.redactors,
                )
                accepted += 1
            except EventInvalid as bad:
                record = self._dead(ref, value, bad.reason, bad.message)
            except RowInvalid as bad:
                err = bad.error
                record = self._dead(ref, value, err.reason, err.message, err.column)
            records.append((ref, value, record))
        return records, accepted

    def _dead(
        self,
        ref: EventRef,
        value: bytes | None,
        reason: str,
        message: str,
        column: str | None = None,
    ) -> Record:
        raw = value or b""
        return self.dead.build(
            tenant=self.tenant,
            connector=self.connector.name,
            file_id=partition_file_id(self.tenant, self.connector.name, ref.topic, ref.partition),
            path=ref.path,
            reason=reason,
            message=f"{ref.path}: {message}",
            stage=STAGE,
            row=ref.offset + 1,
            column=column,
            excerpt=raw[:512].decode("utf-8", "replace"),
            raw=raw,
        )
