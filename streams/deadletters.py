"""Dead letters: a rejected row, record or file, with what is needed to fix and replay it.

Contract: :meth:`DeadLetters.build` returns a ``callstream.DeadLetter`` record for the
dead-letter topic that always fits the record limit. It carries the reason code, where the input
came from (tenant, connector, file, row, line, column), a human message and excerpt, and the
full raw input: inline in ``raw`` when it fits, otherwise stored in the media store and
referenced by ``raw_ref`` (``raw_size`` says how big it was); a delimited file's row also carries
the file's header (``header``, or ``header_ref`` when it is large), so it can be parsed again on
its own. Under a tenant's redaction policy (``redactors``; not ``keep``), raw input of the
ingest stages (files, API items, platform events: unredacted by nature) in which the redactor
finds a card number, e-mail or phone number is stored in the media store, never inline on the
topic or in the ``dead_letters`` table, so replay still reads it; ``message`` and ``excerpt`` are
redacted. :func:`dead_letter_id` names a dead letter
deterministically (a redelivered rejection has the same id), which keeps the ``dead_letters``
table free of duplicates. Blocking when it writes to the media store: call it from a worker
thread. Every dead letter is counted in
``callstream_records_rejected_total`` by reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from typing import IO, Any

from streams.codec import AvroCodec
from streams.kafka import Record
from streams.media import MediaStore
from streams.metrics import Metrics
from streams.redact import Redactor, Redactors
from streams.topics import Topics

DEAD_LETTER = "callstream.DeadLetter"
#: Room left in a record for everything but the raw input (message, excerpt, path, ids).
_OVERHEAD = 16_384
#: Stages whose raw input is a Conversation record already redacted when it was published.
REDACTED_STAGES = frozenset({"cases", "fetch"})
#: Largest header carried inline; a larger one goes to the media store.
HEADER_INLINE_BYTES = 65_536


def _sensitive(raw: bytes, redactor: Redactor) -> bool:
    """Whether the redactor finds anything to redact in ``raw`` (read as UTF-8)."""
    return bool(redactor.redact_text(raw.decode("utf-8", "replace"))[1])


def dead_letter_id(record: dict[str, Any]) -> str:
    """Return the deterministic id of a DeadLetter record: ``dl_`` + 24 hex characters.

    Built from where the input came from, the stage and the reason, and the raw input itself
    (so undecodable records without a source still get one id each).
    """
    raw = record.get("raw") or (record.get("raw_ref") or "").encode()
    parts = (
        record["tenant"],
        record["connector"],
        record["file_id"],
        str(record.get("row") if record.get("row") is not None else "file"),
        record.get("stage") or "",
        record["reason"],
        hashlib.sha256(raw).hexdigest(),
    )
    return "dl_" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _media_prefix(tenant: str, connector: str, file_id: str) -> str:
    """Where a dead letter's raw input goes in the media store; a part not known (a record
    that cannot be decoded names no tenant, connector or file) is ``_``, as an empty path
    segment is refused."""
    return f"{tenant or '_'}/dead-letters/{connector or '_'}/{file_id or '_'}"


class DeadLetters:
    """Builds dead-letter records (see the module doc)."""

    def __init__(
        self,
        codec: AvroCodec,
        topics: Topics,
        metrics: Metrics,
        media: MediaStore,
        max_record_bytes: int,
        redactors: Redactors | None = None,
    ) -> None:
        self.codec = codec
        self.redactors = redactors
        self.topics = topics
        self.metrics = metrics
        self.media = media
        self.raw_budget = max(0, max_record_bytes - _OVERHEAD)

    def build(
        self,
        *,
        tenant: str,
        connector: str,
        file_id: str,
        path: str,
        reason: str,
        message: str,
        stage: str,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
        excerpt: str | None = None,
        raw: bytes | None = None,
        raw_spool: IO[bytes] | None = None,
        header: str | None = None,
    ) -> Record:
        """Return the dead-letter record (topic, key, value) for one rejected input."""
        raw_ref: str | None = None
        raw_size: int | None = None
        header_ref: str | None = None
        budget = self.raw_budget
        redactor = self.redactors.for_tenant(tenant) if self.redactors is not None else None
        private = False  # raw input only in the media store
        if redactor is not None and redactor.settings.policy != "keep":
            private = stage not in REDACTED_STAGES and raw is not None and _sensitive(raw, redactor)
            message = redactor.redact_text(message)[0]
            excerpt = redactor.redact_text(excerpt)[0] if excerpt else excerpt
        if header is not None:
            encoded = header.encode("utf-8", "surrogateescape")
            if len(encoded) > min(HEADER_INLINE_BYTES, budget):
                key = f"{_media_prefix(tenant, connector, file_id)}/header.raw"
                header_ref, header = self.media.put_bytes(key, encoded), None
            else:
                budget -= len(encoded)
        if raw_spool is not None or (raw is not None and (private or len(raw) > budget)):
            key = f"{_media_prefix(tenant, connector, file_id)}/{row if row else 'file'}.raw"
            if raw_spool is None:
                spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
                spool.write(raw or b"")
            else:
                spool = raw_spool
            with spool:
                raw_size = spool.seek(0, 2)
                spool.seek(0)
                raw_ref, _digest = self.media.put(key, spool)
            raw = None
        elif raw is not None:
            raw_size = len(raw)
        record: dict[str, Any] = {
            "tenant": tenant,
            "connector": connector,
            "file_id": file_id,
            "path": path,
            "row": row,
            "line": line,
            "column": column[:200] if column else None,
            "reason": reason,
            "message": message[:2000],
            "excerpt": excerpt[:512] if excerpt else None,
            "stage": stage,
            "raw": raw,
            "raw_ref": raw_ref,
            "raw_size": raw_size,
            "header": header,
            "header_ref": header_ref,
            "occurred_at": dt.datetime.now(dt.UTC),
        }
        self.metrics.records_rejected.labels(
            tenant=tenant, connector=connector, reason=reason
        ).inc()
        topic_key = f"{tenant}/{connector}/{path}".encode()
        return (self.topics.dead_letter, topic_key, self.codec.encode(DEAD_LETTER, record))
