"""The transcription stage: claims queued transcriptions, transcribes, and updates their cases.

Contract of :class:`TranscriptionWorker` (one per worker process, started by the service when
``voice.transcription.engine`` is not ``none``):

- claims due rows of :mod:`streams.voice.queue` (at most ``max_concurrency`` at once, each
  transcribed in its own worker thread: a queue, never a spike), renews their leases while it
  works and gives back what it holds when it stops;
- streams the recording from the media store through
  :func:`~streams.voice.transcribe.transcribe_stream`, then publishes the case's newest
  conversation again with the transcript as its turns (speaker per channel, ``at`` = start of
  the call + the utterance's offset) and ``transcript.status = transcribed`` (delivery
  ``tr_<case id>`` / revision: the case store applies it once, as version + 1, and analyses it
  with the text rules and sentiment chats use); turns are redacted by the tenant's policy
  before they leave (:func:`~streams.ingest.records.conversation_record`); then marks the row
  ``done``. A kill at any point redoes the work or the publish, never loses it; a newer
  conversation that arrived meanwhile is completed too (see the queue's ``revision``);
- a recording that does not decode, is gone, or whose transcriber fails for good (after
  ``max_attempts`` tries of a retryable failure) ends with ``transcript.status = failed`` and
  a reason (``audio_undecodable``, ``recording_missing``, ``transcriber_failed``,
  ``record_too_large``): the case keeps its voice metrics; other cases never wait for it;
- a failure that is not the recording's (media store, Kafka or database down) gives the row
  back without counting an attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from streams.codec import AvroCodec
from streams.failures import Failure, attempt, classify
from streams.fetch.policy import backoff_seconds
from streams.ingest.parse import RowInvalid
from streams.ingest.records import CONVERSATION, conversation_record
from streams.kafka import Producer
from streams.media import MediaStore
from streams.metrics import Metrics
from streams.redact import Redactors
from streams.settings import VoiceSettings
from streams.topics import Topics
from streams.voice import queue
from streams.voice.decode import AudioError
from streams.voice.transcribe import Transcriber, TranscriberError, Utterance, transcribe_stream
from streams.workqueue import LeasedWorker

log = logging.getLogger(__name__)

#: Publishes of one transcript before a worker gives the newest conversation up to the next try
#: (each publish follows a newer conversation of the case: a burst of metadata updates).
MAX_REPUBLISH = 5


def outcome_file_id(case_id: str) -> str:
    """The ``SourceRef.file_id`` of a transcript delivery (its row is the queue revision)."""
    return f"tr_{case_id}"


class _Gone(Exception):
    """The row is no longer this worker's (re-queued, or its lease ran out)."""


class TranscriptionWorker(LeasedWorker[queue.Claimed]):
    """The transcription stage (see the module doc)."""

    name = "transcribe"

    def __init__(
        self,
        engine: AsyncEngine,
        media: MediaStore,
        producer: Producer,
        codec: AvroCodec,
        topics: Topics,
        metrics: Metrics,
        voice: VoiceSettings,
        transcriber: Transcriber,
        redactors: Redactors,
        *,
        max_record_bytes: int,
        poll_seconds: float = 1.0,
        lease_seconds: float = 600.0,
    ) -> None:
        super().__init__(voice.transcription.max_concurrency, poll_seconds, lease_seconds)
        self.engine = engine
        self.media = media
        self.producer = producer
        self.codec = codec
        self.topics = topics
        self.metrics = metrics
        self.voice = voice
        self.settings = voice.transcription
        self.transcriber = transcriber
        self.redactors = redactors
        self.max_record_bytes = max_record_bytes
        self._pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix=self.name)

    async def claim(self, limit: int) -> list[queue.Claimed]:
        return await queue.claim(self.engine, limit, self.lease)

    async def renew(self, held: list[queue.Claimed]) -> None:
        await queue.renew(self.engine, held, self.lease)

    async def release(self, held: list[queue.Claimed]) -> None:
        await queue.release(self.engine, held)

    async def stop(self) -> None:
        """Stop claiming; give back what runs (see :class:`~streams.workqueue.LeasedWorker`)."""
        await super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def work(self, item: queue.Claimed) -> None:
        try:
            await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except _Gone:
            log.info("transcription of case %s: taken over, left to its new holder", item.case_id)
        except Exception as exc:  # not the recording's fault: give it back for later
            log.warning("transcription of case %s failed", item.case_id, exc_info=True)
            await self._later(item, exc)

    async def _attempt(self, item: queue.Claimed) -> None:
        found = await queue.latest(self.engine, item)
        if found is None or not found.held:
            raise _Gone
        conv = self.codec.decode(CONVERSATION, found.conversation)
        pending = conv["transcript"]
        voice = conv.get("voice") or {}
        key = pending["recording_key"]
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            said = await loop.run_in_executor(
                self._pool,
                self._transcribe,
                key,
                pending["agent_channel"],
                int(voice.get("channels") or 2),
            )
        except AudioError as exc:
            await self._end(item, queue.FAILED, reason=exc.reason, message=str(exc))
            return
        except FileNotFoundError:
            await self._end(
                item,
                queue.FAILED,
                reason="recording_missing",
                message=f"{key} is no longer in the media store",
            )
            return
        except TranscriberError as exc:
            attempts = item.attempts + 1
            if exc.retryable and attempts < self.settings.max_attempts:
                await self._retry(item, attempts, "transcriber_failed", str(exc))
                return
            await self._end(item, queue.FAILED, reason="transcriber_failed", message=str(exc))
            return
        elapsed = time.monotonic() - started
        if voice.get("duration_seconds"):
            self.metrics.transcription_rtf.observe(elapsed / voice["duration_seconds"])
        await self._end(item, queue.DONE, said=said)

    def _transcribe(self, key: str, agent_channel: str, channels: int) -> list[Utterance]:
        name = PurePosixPath(key).name
        with self.media.open_read(key) as stream:
            return transcribe_stream(
                stream, name, self.voice, agent_channel, channels, self.transcriber
            )

    async def _retry(self, item: queue.Claimed, attempts: int, reason: str, message: str) -> None:
        delay = backoff_seconds(attempts, 5.0, 300.0)
        self.metrics.transcriptions.labels(tenant=item.tenant, outcome="retried").inc()
        log.info(
            "transcription of case %s (attempt %d of %d): %s; again in %.0fs",
            item.case_id,
            attempts,
            self.settings.max_attempts,
            message,
            delay,
        )
        await queue.retry_later(
            self.engine,
            item,
            attempts=attempts,
            at=queue.utcnow() + dt.timedelta(seconds=delay),
            reason=reason,
            message=message,
        )

    async def _later(self, item: queue.Claimed, exc: Exception) -> None:
        """Give a row back after a failure that is not the recording's: an outage waits
        without counting; a bug counts, and fails the transcript after ``max_attempts``."""
        counted = item.attempts + (0 if classify(exc) is Failure.TRANSIENT else 1)
        message = f"{type(exc).__name__}: {exc}"
        try:
            if counted >= self.settings.max_attempts:
                await self._end(item, queue.FAILED, reason="transcriber_failed", message=message)
                return
            await self._retry(item, counted, "processing_failed", message)
        except Exception:  # noqa: BLE001 - the database is down too: the lease runs out, it is redone
            log.warning("transcription of case %s: cannot give it back", item.case_id)

    async def _end(
        self,
        item: queue.Claimed,
        status: str,
        *,
        said: list[Utterance] | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Publish the case's newest conversation with the transcript (or its failure), then
        end the row; again on top of a newer conversation that came meanwhile."""
        for _ in range(MAX_REPUBLISH):
            found = await queue.latest(self.engine, item)
            if found is None or not found.held:
                raise _Gone
            conv = self.codec.decode(CONVERSATION, found.conversation)
            before = dict(conv.get("redactions") or {})
            if said is not None:
                turns = [(u.speaker, round(u.start * 1000), u.text) for u in said]
                conv = queue.with_turns(conv, turns, {})
            else:
                conv["transcript"] = queue.transcript_state(
                    queue.NOT_TRANSCRIBED, conv["transcript"], reason, (message or "")[:2000]
                )
            conv["source"] = {
                **conv["source"],
                "file_id": outcome_file_id(item.case_id),
                "row": found.revision,
            }
            try:
                record = conversation_record(
                    self.codec, self.topics, conv, self.max_record_bytes, self.redactors
                )
            except RowInvalid as exc:  # e.g. a transcript too large for one record
                said, reason, message = None, exc.error.reason, exc.error.message
                status = queue.FAILED
                continue
            await attempt(
                f"publishing the transcript of case {item.case_id}",
                functools.partial(self.producer.send_batch, [record]),
                stage="transcribe",
                metrics=self.metrics,
                max_attempts=10**9,  # transient only: Kafka down waits, nothing is dropped
            )
            fields: dict[str, Any] = {
                "attempts": item.attempts + 1,
                "reason": reason,
                "message": (message or "")[:2000] or None,
            }
            if said is not None:
                stored = [
                    (t["speaker"], ms, t["text"])
                    for t, (_, ms, _) in zip(conv["turns"], turns, strict=True)
                ]
                counts = {
                    k: n - before.get(k, 0)
                    for k, n in conv["redactions"].items()
                    if n - before.get(k, 0)
                }
                fields |= {"turns": json.dumps(stored), "redactions": json.dumps(counts)}
            if await queue.finish(self.engine, item, found.revision, status, **fields):
                outcome = "transcribed" if status == queue.DONE else "failed"
                self.metrics.transcriptions.labels(tenant=item.tenant, outcome=outcome).inc()
                log.info(
                    "case %s: transcript %s (%s)",
                    item.case_id,
                    outcome,
                    f"{len(said)} turns" if said is not None else reason,
                )
                return
        raise RuntimeError(f"case {item.case_id} kept changing while its transcript was published")
