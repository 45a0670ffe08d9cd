"""One platform event -> its ``conversations.v1`` record, by the rules every source obeys.

The event's decoded object is mapped with the connector's ``ingest`` settings exactly like a
CSV row's columns (:func:`streams.ingest.parse.map_document`), then validated by
:func:`~streams.ingest.parse.document_conversation` and encoded by
:func:`~streams.ingest.records.conversation_record` - the chat-file and ingest-API path.

Lineage and idempotency: ``source.file_id`` names the topic partition (``pk_`` + a hash of
tenant, connector, topic and partition), ``source.row`` is the offset + 1, so a redelivered
event has the same delivery key and the case store applies it once
(:func:`streams.cases.store.delivery_key`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from streams.cases.store import PLATFORM_PARTITION_PREFIX
from streams.codec import AvroCodec
from streams.fetch.request import request_fetch
from streams.ingest.parse import RowInvalid, document_conversation, map_document
from streams.ingest.records import conversation_record
from streams.kafka import Record
from streams.platform.settings import PlatformConnectorSettings
from streams.redact import Redactors
from streams.topics import Topics

#: Keys of an event that are never metadata: the tenant is the connector's, the source system
#: the connector's ``ingest.source_system``.
RESERVED = ("tenant", "source_system")


@dataclass(frozen=True, slots=True)
class EventRef:
    """Where one event was read: topic, partition, offset and its Kafka timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp: dt.datetime

    @property
    def path(self) -> str:
        """Human form for lineage and dead letters: ``<topic>/<partition>@<offset>``."""
        return f"{self.topic}/{self.partition}@{self.offset}"


def partition_file_id(tenant: str, connector: str, topic: str, partition: int) -> str:
    """Return the ``file_id`` of a topic partition: the same for every event in it."""
    raw = "\x00".join((tenant, connector, topic, str(partition))).encode()
    return PLATFORM_PARTITION_PREFIX + hashlib.sha256(raw).hexdigest()[:29]


def event_record(
    doc: dict[str, Any],
    tenant: str,
    connector: PlatformConnectorSettings,
    ref: EventRef,
    codec: AvroCodec,
    topics: Topics,
    max_record_bytes: int,
    redactors: Redactors,
) -> Record:
    """Build the Conversation record of one decoded event; raise RowInvalid naming the field."""
    claimed = doc.get("tenant")
    if claimed is not None and claimed != tenant:
        raise RowInvalid(
            "tenant_mismatch",
            f"the event names tenant {str(claimed)[:64]!r}; this connector belongs to {tenant!r}",
            "tenant",
        )
    settings = connector.ingest
    fields, metadata = map_document(doc, settings, skip=RESERVED)
    conv = document_conversation(
        fields, settings, default_channel=settings.default_channel, metadata=metadata
    )
    conv.update(
        tenant=tenant,
        source_system=settings.source_system,
        source={
            "file_id": partition_file_id(tenant, connector.name, ref.topic, ref.partition),
            "connector": connector.name,
            "path": ref.path,
            "row": ref.offset + 1,
            "announced_at": ref.timestamp,
        },
        duration_ms=None,
    )
    if connector.recording_fetch is not None:
        conv = request_fetch(tenant, conv, connector.recording_fetch)
    return conversation_record(codec, topics, conv, max_record_bytes, redactors)
