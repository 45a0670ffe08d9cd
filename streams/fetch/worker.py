"""The fetch stage: claims queued recording fetches, fetches them, and completes their cases.

Contract of :class:`RecordingFetcher` (one per worker process, started by the service):

- claims due rows of :mod:`streams.fetch.queue` (at most ``slots`` at once; per tenant at most
  the connector's ``concurrency_per_tenant`` fetching at once), renews their leases while it
  works, and gives back what it holds when it stops;
- a fetched recording is stored in the media store (:mod:`streams.fetch.download`), then the
  case's newest pending conversation is published again with ``recording_ref`` naming the stored
  object and ``recording.status = stored`` (delivery ``rf_<case id>`` / generation, applied once
  by the case store), then the row is marked ``stored``: a kill at any point redoes the fetch or
  the publish, never loses it;
- a retryable failure (429, 5xx, 408, timeout, refused connection, truncated body) is tried
  again after :func:`~streams.fetch.policy.backoff_seconds` (Retry-After honoured, capped),
  until ``max_attempts``; a final or permanent one publishes, in one batch, the conversation
  marked ``missing`` (with the HTTP status and reason) and a dead letter
  ``recording_fetch_failed`` (stage ``fetch``, the HTTP status in its message, the pending
  conversation as raw: replaying it queues the fetch again), then marks the row ``failed``;
- a failure that is not the recording's (media store, Kafka or database down) gives the row
  back without counting an attempt (the failure policy of :mod:`streams.failures`).

Every URL and redirect goes through the SSRF guard (``api.connect_allow`` is the allow-list,
for every connector: a URL in a file is input, whoever configured the connector).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.netguard import AddressGuard
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.failures import Failure, attempt, classify
from streams.fetch import queue
from streams.fetch.download import Downloader, Fetched
from streams.fetch.policy import FetchFailed, backoff_seconds, redact
from streams.fetch.request import MISSING, PENDING, STORED, recording_state
from streams.fetch.settings import RecordingFetchSettings
from streams.ingest.parse import RowInvalid
from streams.ingest.records import CONVERSATION, conversation_record
from streams.kafka import Producer, Record
from streams.media import MediaStore
from streams.metrics import Metrics
from streams.redact import Redactors
from streams.topics import Topics
from streams.workqueue import LeasedWorker

log = logging.getLogger(__name__)

FETCH_FAILED = "recording_fetch_failed"
#: Failures of one fetch that are neither the recording's nor an outage (bugs) before it is
#: dead-lettered as ``processing_failed``.
UNKNOWN_ATTEMPTS = 5
SettingsOf = Callable[[str, str], Awaitable[RecordingFetchSettings | None]]
"""Return the fetch settings of (tenant, connector), or None when it has none (any more)."""


def outcome_file_id(case_id: str) -> str:
    """The ``SourceRef.file_id`` of a fetch outcome (its row is the fetch's generation)."""
    return f"rf_{case_id}"


def retry_file_id(case_id: str) -> str:
    """The ``SourceRef.file_id`` of the pending conversation a dead letter keeps for replay."""
    return f"rr_{case_id}"


class RecordingFetcher(LeasedWorker[queue.Claimed]):
    """The fetch stage (see the module doc)."""

    name = "fetch"

    def __init__(
        self,
        engine: AsyncEngine,
        media: MediaStore,
        producer: Producer,
        codec: AvroCodec,
        topics: Topics,
        dead: DeadLetters,
        metrics: Metrics,
        settings_of: SettingsOf,
        guard: AddressGuard,
        *,
        max_record_bytes: int,
        redactors: Redactors,
        slots: int = 16,
        poll_seconds: float = 1.0,
        lease_seconds: float = 300.0,
    ) -> None:
        super().__init__(slots, poll_seconds, lease_seconds)
        self.engine = engine
        self.codec = codec
        self.topics = topics
        self.producer = producer
        self.dead = dead
        self.metrics = metrics
        self.settings_of = settings_of
        self.downloader = Downloader(guard, media, threads=slots)
        self.max_record_bytes = max_record_bytes
        self.redactors = redactors
        self._tenants: dict[str, tuple[int, asyncio.Semaphore]] = {}

    async def claim(self, limit: int) -> list[queue.Claimed]:
        return await queue.claim(self.engine, limit, self.lease)

    async def renew(self, held: list[queue.Claimed]) -> None:
        await queue.renew(self.engine, held, self.lease)

    async def release(self, held: list[queue.Claimed]) -> None:
        await queue.release(self.engine, held)

    async def start(self) -> None:
        """Start claiming and fetching."""
        await self.downloader.start()
        await super().start()

    async def stop(self) -> None:
        """Stop: fetches in flight are abandoned and given back (due at once for the next
        worker; after a kill, their leases run out instead)."""
        await super().stop()
        await self.downloader.stop()

    def _semaphore(self, tenant: str, size: int) -> asyncio.Semaphore:
        known = self._tenants.get(tenant)
        if known is None or known[0] != size:
            known = (size, asyncio.Semaphore(size))
            self._tenants[tenant] = known
        return known[1]

    async def work(self, item: queue.Claimed) -> None:
        try:
            await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not the recording's fault: give it back for later
            log.warning("recording fetch of case %s failed", item.case_id, exc_info=True)
            await self._not_fetched(item, exc)

    async def _not_fetched(self, item: queue.Claimed, exc: Exception) -> None:
        """Give a fetch back after a failure that is not about the recording: a dependency
        down waits without counting; a bug counts, and dead-letters after
        :data:`UNKNOWN_ATTEMPTS` (``processing_failed``) so no fetch retries for ever."""
        kind = classify(exc)
        counted = item.attempts + (0 if kind is Failure.TRANSIENT else 1)
        try:
            if counted >= UNKNOWN_ATTEMPTS:
                failure = FetchFailed(
                    "processing_failed", f"{type(exc).__name__}: {exc}", retryable=False
                )
                await self._give_up(item, failure, counted)
                return
            delay = backoff_seconds(max(counted, 1), 2.0, 60.0)
            await queue.retry_later(
                self.engine,
                item,
                attempts=counted,
                at=queue.utcnow() + dt.timedelta(seconds=delay),
                http_status=None,
                reason="processing_failed",
                message=f"{type(exc).__name__}: {exc}"[:2000],
            )
        except Exception:  # the database is down too: the lease runs out, it is redone
            log.warning(
                "recording fetch of case %s: cannot give it back", item.case_id, exc_info=True
            )

    async def _attempt(self, item: queue.Claimed) -> None:
        settings = await self.settings_of(item.tenant, item.connector)
        if settings is None:
            failure = FetchFailed(
                "no_fetch_settings",
                f"connector {item.connector!r} of tenant {item.tenant!r} has no recording_fetch "
                "settings (any more)",
                retryable=False,
            )
            await self._give_up(item, failure, item.attempts)
            return
        async with self._semaphore(item.tenant, settings.concurrency_per_tenant):
            conv = self.codec.decode(CONVERSATION, item.conversation)
            template = settings.call_id_url_template
            started = time.monotonic()
            try:
                fetched = await self.downloader.fetch(
                    item.source_url,
                    settings,
                    tenant=item.tenant,
                    file_id=outcome_file_id(item.case_id),
                    when=conv["started_at"],
                    auth_origin=template.replace("{call_id}", "x") if template else None,
                )
            except FetchFailed as failure:
                attempts = item.attempts + 1
                if failure.retryable and attempts < settings.max_attempts:
                    await self._later(item, failure, attempts, settings)
                    return
                await self._give_up(item, failure, attempts)
                return
            finally:
                self.metrics.recording_fetch_seconds.observe(time.monotonic() - started)
        await self._stored(item, fetched, item.attempts + 1)

    async def _later(
        self,
        item: queue.Claimed,
        failure: FetchFailed,
        attempts: int,
        settings: RecordingFetchSettings,
    ) -> None:
        delay = backoff_seconds(
            attempts,
            settings.backoff_initial_seconds,
            settings.backoff_max_seconds,
            failure.retry_after,
        )
        self.metrics.recording_fetches.labels(tenant=item.tenant, outcome="retried").inc()
        log.info(
            "recording fetch of case %s (attempt %d of %d): %s; again in %.1fs",
            item.case_id,
            attempts,
            settings.max_attempts,
            failure,
            delay,
        )
        await queue.retry_later(
            self.engine,
            item,
            attempts=attempts,
            at=queue.utcnow() + dt.timedelta(seconds=delay),
            http_status=failure.http_status,
            reason=failure.reason,
            message=str(failure)[:2000],
        )

    async def _latest(self, item: queue.Claimed) -> dict[str, Any]:
        """The case's newest pending conversation (a newer one may have come meanwhile)."""
        async with self.engine.connect() as conn:
            raw = (
                await conn.execute(
                    select(queue.recording_fetches.c.conversation).where(
                        queue.recording_fetches.c.case_id == item.case_id
                    )
                )
            ).scalar_one_or_none()
        return self.codec.decode(CONVERSATION, bytes(raw or item.conversation))

    def _outcome(self, item: queue.Claimed, conv: dict[str, Any]) -> dict[str, Any]:
        """``conv`` as the fetch's own delivery (its source names the fetch, not the file)."""
        source = conv.get("source") or {
            "connector": item.connector,
            "path": redact(item.source_url)[:1024],
            "announced_at": queue.utcnow(),
        }
        conv["source"] = {
            **source,
            "file_id": outcome_file_id(item.case_id),
            "row": item.generation,
        }
        return conv

    async def _stored(self, item: queue.Claimed, fetched: Fetched, attempts: int) -> None:
        stored = fetched.stored
        conv = await self._latest(item)
        conv["recording_ref"] = stored.ref
        conv["recording"] = recording_state(
            STORED,
            item.source_url,
            media_key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            media_type=fetched.media_type,
            http_status=fetched.http_status,
            attempts=attempts,
        )
        if conv.get("duration_ms") is None and stored.duration_seconds is not None:
            conv["duration_ms"] = round(stored.duration_seconds * 1000)
        record = conversation_record(
            self.codec,
            self.topics,
            self._outcome(item, conv),
            self.max_record_bytes,
            self.redactors,
        )
        await self._publish([record], f"publishing the stored recording of case {item.case_id}")
        await queue.finish(
            self.engine,
            item,
            queue.DONE,
            attempts=attempts,
            http_status=fetched.http_status,
            reason=None,
            message=None,
            media_key=stored.key,
            recording_ref=stored.ref,
            sha256=stored.sha256,
            size=stored.size,
            media_type=fetched.media_type,
            duration_ms=conv.get("duration_ms"),
        )
        self.metrics.recording_fetches.labels(tenant=item.tenant, outcome="stored").inc()
        log.info(
            "recording of case %s stored: %s (%d bytes, sha256 %s)",
            item.case_id,
            stored.uri,
            stored.size,
            stored.sha256,
        )

    async def _give_up(self, item: queue.Claimed, failure: FetchFailed, attempts: int) -> None:
        status = failure.http_status
        conv = await self._latest(item)
        original = dict(conv.get("source") or {})
        pending = {
            **conv,
            "source": {
                **(
                    original
                    or {"connector": item.connector, "path": "", "announced_at": queue.utcnow()}
                ),
                "file_id": retry_file_id(item.case_id),
                "row": item.generation,
            },
        }
        conv["recording"] = recording_state(
            MISSING,
            item.source_url,
            http_status=status,
            reason=failure.reason,
            attempts=attempts,
        )
        message = (
            f"recording of {conv['external_interaction_id']!r} not fetched: {failure} "
            f"(reason {failure.reason}, "
            f"{f'HTTP {status}' if status is not None else 'no HTTP status'}, "
            f"after {attempts} attempt(s)); replay this dead letter to fetch it again"
        )
        records: list[Record] = []
        try:
            records.append(
                conversation_record(
                    self.codec,
                    self.topics,
                    self._outcome(item, conv),
                    self.max_record_bytes,
                    self.redactors,
                )
            )
        except RowInvalid as exc:  # cannot happen for a conversation that was published
            log.error(
                "case %s: the missing-recording update does not encode: %s", item.case_id, exc
            )
        raw = self.codec.encode(
            CONVERSATION, {**pending, "recording": recording_state(PENDING, item.source_url)}
        )
        dead = await asyncio.to_thread(
            functools.partial(
                self.dead.build,
                tenant=item.tenant,
                connector=item.connector,
                file_id=str(original.get("file_id") or retry_file_id(item.case_id)),
                path=str(original.get("path") or ""),
                row=original.get("row"),
                column="recording_ref",
                reason=FETCH_FAILED,
                message=message,
                stage="fetch",
                excerpt=redact(item.source_url),
                raw=raw,
            )
        )
        records.append(dead)
        await self._publish(records, f"publishing the failed fetch of case {item.case_id}")
        await queue.finish(
            self.engine,
            item,
            queue.FAILED,
            attempts=attempts,
            http_status=status,
            reason=failure.reason,
            message=message[:2000],
        )
        self.metrics.recording_fetches.labels(tenant=item.tenant, outcome="failed").inc()
        log.warning("case %s: %s", item.case_id, message)

    async def _publish(self, records: list[Record], what: str) -> None:
        await attempt(
            what,
            functools.partial(self.producer.send_batch, records),
            stage="fetch",
            metrics=self.metrics,
            max_attempts=10**9,  # transient only: Kafka down waits, nothing is dropped
        )
