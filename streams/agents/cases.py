"""Conversations -> cases (opened / updated / duplicate), analysis, outbox: the cases consumer.

Failure policy (:mod:`streams.failures`): a batch whose store write fails transiently is retried
until it passes; one that keeps failing otherwise is bisected until the poison conversation is
alone, which is dead-lettered (``processing_failed``, with the error and the raw record) while
the rest of the batch is stored. No conversation can stall its partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.app import processors_group
from streams.cases.store import BatchOutcome, CaseStore, OutboxRelay
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.errors import SchemaError
from streams.failures import GaveUp, attempt
from streams.health import Check, NotReady
from streams.kafka import ConsumerThread, Producer, commit_sync, session_config
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.tasks import cancel_and_wait
from streams.topics import LIVE, Topics

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


def cases_group(topics: Topics) -> str:
    """The consumer group of the cases consumers of ``topics.lane`` (``<prefix>-cases``,
    ``<prefix>-cases-bulk``)."""
    suffix = "" if topics.lane == LIVE else f"-{topics.lane}"
    return f"{topics.prefix}-cases{suffix}"


def adopt_offsets(config: dict[str, Any], legacy_group: str, group: str, topic: str) -> int:
    """Give ``group`` the positions ``legacy_group`` committed on ``topic`` when ``group`` has
    none yet; return how many partitions it took (blocking: call it from a worker thread).

    Releases before the cases consumer read the conversations topic in the Faust app's group
    (``<prefix>-processors``, :func:`streams.app.processors_group`). Without this, the first
    start after an upgrade would begin at the earliest retained record: no loss, as the case
    store absorbs every redelivery, but hours of replay ahead of live work. The commit is one a
    consumer outside the group makes, which Kafka accepts while ``group`` has no member; if one
    joined meanwhile it already took the positions, and the refusal is harmless.
    """
    probe = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        meta = probe.list_topics(topic, timeout=_META_TIMEOUT).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        if any(tp.offset >= 0 for tp in probe.committed(parts, timeout=_META_TIMEOUT)):
            return 0
        legacy = Consumer({**config, "group.id": legacy_group, "enable.auto.commit": False})
        try:
            theirs = [tp for tp in legacy.committed(parts, timeout=_META_TIMEOUT) if tp.offset >= 0]
        finally:
            legacy.close()
        if not theirs:
            return 0
        commit_sync(probe, theirs)
        return len(theirs)
    finally:
        probe.close()


_META_TIMEOUT = 15.0
#: Attempts at taking the previous release's positions before consuming without them.
_ADOPT_ATTEMPTS = 4
#: librdkafka's limit between two polls before it takes the partitions away (the default is
#: 300 s). A batch is stored between two polls and retried while the database is down, so the
#: limit is Faust's (1,000 s, what releases before the cases consumer had): a shorter outage
#: keeps the partitions; after a longer one the worker rejoins and its last batch is redelivered.
_MAX_POLL_MS = 1_000_000
#: Longest wait for a lane's first conversation of a batch (the rest is what already arrived).
_POLL_SECONDS = 1.0


#: How long a batch waits for the previous batch's publish before leaving its own rows to the
#: relay (a publish stuck on Kafka must not stall storing).
PUBLISH_WAIT_SECONDS = 1.0


class CasesConsumer:
    """Consumes one lane's conversations topic and stores them in batches (``start``/``stop``).

    Contract:

    - one consumer group per lane (:func:`cases_group`), so any number of workers share the
      partitions and a bulk backlog never delays the live lane; a dead worker's partitions move
      within ``processors.session_timeout_seconds``;
    - a batch is what arrived, up to ``processors.batch_size`` records: the first is waited
      for, the rest taken from librdkafka's prefetched queue (a backlog fills a batch at once, a
      single record is not held back);
    - per batch: decode (an undecodable record is dead-lettered ``undecodable_record``),
      :meth:`CaseWriter.write` (one transaction; a poison conversation is dead-lettered), start
      publishing the rows it committed (:meth:`OutboxRelay.publish_written`, in the background
      while the next batch is stored; when the previous batch's is still running after
      :data:`PUBLISH_WAIT_SECONDS`, or anything stops it, the rows are the relay's, which keeps
      each case's order), and only then commit the batch's offsets. A crash or rebalance before
      the commit redelivers the batch, which the case store applies once (at-least-once input,
      exactly-once effects); an unexpected error retries the same batch, never skips it;
    - the blocking librdkafka consumer runs in its own thread, one call at a time.

    It replaced the Faust agent of earlier releases: Faust delivered each record through
    aiokafka and its own event objects, while librdkafka hands over a batch from C. A
    processor's CPU per conversation fell by about a third (pipeline benchmark, 1 worker: 345
    to 206-253 ms per 1,000 conversations).
    """

    def __init__(
        self,
        config: dict[str, Any],
        topics: Topics,
        codec: AvroCodec,
        writer: CaseWriter,
        relay: OutboxRelay,
        metrics: Metrics,
        settings: ProcessorSettings,
    ) -> None:
        self._config = config
        self.topics = topics
        self.codec = codec
        self.writer = writer
        self.relay = relay
        self.metrics = metrics
        self.settings = settings
        self.group = cases_group(topics)
        self._consumer = ConsumerThread(f"cases-{topics.lane}")
        self._task: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[int] | None = None  # the last batch's publish_written
        self._assignments = 0  # completed assignments (rebalances)
        self._revocations = 0
        self._assigned: set[int] = set()
        self._rebalancing = False

    async def start(self) -> None:
        """Adopt the previous release's positions (first start only), join the group, consume."""
        topic = self.topics.conversations
        legacy = processors_group(self.topics)
        for n in range(1, _ADOPT_ATTEMPTS + 1):
            try:
                took = await self._consumer.run(
                    adopt_offsets, self._config, legacy, self.group, topic
                )
            except KafkaException as exc:
                if n < _ADOPT_ATTEMPTS:
                    await asyncio.sleep(2**n)
                    continue
                log.warning(
                    "%s: could not take the positions of %s (%s); a partition %s has no "
                    "position for is read from its earliest record (the case store absorbs "
                    "what it applied before)",
                    self.group,
                    legacy,
                    exc,
                    self.group,
                )
            else:
                if took:
                    log.info(
                        "%s: took the positions of %d partition(s) from %s",
                        self.group,
                        took,
                        legacy,
                    )
            break
        config = {
            **self._config,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": _MAX_POLL_MS,
            **session_config(self.settings.session_timeout_seconds),
        }
        await self._consumer.subscribe(
            config,
            [topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._task = asyncio.create_task(self._loop(), name=f"cases-{self.topics.lane}")

    async def stop(self) -> None:
        """Stop consuming (what is not committed is redelivered) and leave the group. A publish
        still running gets the relay's ``drain_seconds`` to finish, then is cancelled: its rows
        stay in the outbox for the relay (cancelled mid-send, they may be sent twice)."""
        await cancel_and_wait(self._task)
        if self._publishing is not None:
            await asyncio.wait({self._publishing}, timeout=self.relay.drain_seconds)
        await cancel_and_wait(self._publishing)
        await self._consumer.close()

    # Rebalance callbacks (librdkafka calls them inside a poll, in the consumer's thread). They
    # add and remove, as the cooperative protocol hands over only what changes.
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self._assignments += 1
        self._rebalancing = False

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {tp.partition for tp in partitions}
        self._revocations += 1
        self._rebalancing = True

    def readiness(self) -> Check:
        """Ready once the group gave this worker its partitions (possibly none: a standby) and
        no rebalance is in progress."""

        async def check() -> str:
            if self._task is not None and self._task.done():
                raise NotReady("the cases consumer stopped (the service log says why)")
            if self._assignments == 0:
                raise NotReady("waiting for the first partition assignment")
            if self._rebalancing:
                raise NotReady("the consumer group is rebalancing")
            return f"{len(self._assigned)} partition(s) assigned"

        return check

    async def _loop(self) -> None:
        most = self.settings.batch_size
        while True:
            try:
                revocations = self._revocations
                msgs = await self._consumer.take(most, _POLL_SECONDS)
            except Exception:  # never end the consumer: its partitions would wait for nobody
                log.exception("%s: reading conversations failed; retrying", self.group)
                await asyncio.sleep(1)
                continue
            records = []
            for msg in msgs:
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: %s", self.group, err.str())
            while records:
                try:
                    await self.handle(records, revocations)
                    break
                except Exception:  # a bug must not skip the batch nor end the consumer
                    log.exception("%s: a batch of %d failed; retrying it", self.group, len(records))
                    await asyncio.sleep(1)

    async def handle(self, msgs: list[Message], revocations: int) -> None:
        """Store one batch, then commit its offsets (see the class doc). ``revocations``: the
        count of revoked assignments when the batch was taken; if a partition was revoked since,
        nothing is committed (the partition may have a new owner whose position must not move
        back), and the batch's records are redelivered to their owners and absorbed."""
        batch: list[tuple[dict[str, Any], bytes]] = []
        for msg in msgs:
            raw = msg.value() or b""
            try:
                batch.append((self.codec.decode(CONVERSATION, raw), raw))
            except SchemaError as exc:
                where = f"{msg.topic()} partition {msg.partition()} offset {msg.offset()}"
                await self.writer.dead_letter(
                    tenant="",
                    connector="",
                    file_id="",
                    path="",
                    reason="undecodable_record",
                    message=f"conversation record at {where}: {exc}",
                    raw=raw,
                )
        outcome = await self.writer.write(batch)
        self.metrics.case_batch_records.labels(lane=self.topics.lane).observe(len(msgs))
        for counter, metric in (
            (outcome.opened, self.metrics.cases_opened),
            (outcome.updated, self.metrics.cases_updated),
            (outcome.duplicates, self.metrics.duplicates_absorbed),
        ):
            for tenant, n in counter.items():
                metric.labels(tenant=tenant).inc(n)
        previous = self._publishing
        if previous is not None:  # waited for briefly (Kafka may hang), never cancelled
            await asyncio.wait({previous}, timeout=PUBLISH_WAIT_SECONDS)
        if previous is None or previous.done():
            if previous is not None and not previous.cancelled() and previous.exception():
                log.error("%s: publishing a batch failed: %r", self.group, previous.exception())
            self._publishing = asyncio.create_task(
                self.relay.publish_written(outcome.written), name=f"publish-{self.topics.lane}"
            )
        else:
            self.relay.wake()  # the previous batch is still publishing: these are the relay's
        if revocations != self._revocations:
            log.info(
                "%s: partitions were revoked while %d records were stored; not committing "
                "them (redelivered to their owners and absorbed)",
                self.group,
                len(msgs),
            )
            return
        try:
            await self._consumer.commit(msgs)  # False: stopped meanwhile, redelivered
        except KafkaException as exc:  # e.g. a rebalance took a partition: it is redelivered
            log.warning(
                "%s: commit of %d records refused (%s); they are redelivered and absorbed",
                self.group,
                len(msgs),
                exc,
            )
