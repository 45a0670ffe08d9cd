"""Encode a validated conversation as its ``conversations.v1`` record: one step for every source.

Files (CSV/TSV rows, chat transcripts, recording bundles), the ingest API and dead-letter
replay all publish through :func:`conversation_record`, so redaction (the tenant's policy,
:mod:`streams.redact`), strict Avro validation and the record-size limit are applied the same way
whatever the conversation came from: no turn text leaves here unredacted.
"""

from __future__ import annotations

from typing import Any

from streams.codec import AvroCodec
from streams.errors import SchemaError
from streams.ingest.parse import RowInvalid
from streams.kafka import Record
from streams.redact import Redactors
from streams.topics import Topics

CONVERSATION = "callstream.Conversation"
#: Room in a record for the key and Kafka's per-record overhead.
RECORD_OVERHEAD = 512


def conversation_key(conv: dict[str, Any]) -> bytes:
    """Return the record key ``<tenant>/<source_system>/<external id>``."""
    return f"{conv['tenant']}/{conv['source_system']}/{conv['external_interaction_id']}".encode()


def conversation_record(
    codec: AvroCodec,
    topics: Topics,
    conv: dict[str, Any],
    max_record_bytes: int,
    redactors: Redactors,
) -> Record:
    """Redact the turns of a complete Conversation (tenant, source system and source set) in
    place under the tenant's policy, counting into ``redactions``, then encode it.

    Raises :class:`~streams.ingest.parse.RowInvalid` ``schema_violation`` when Avro refuses it
    and ``record_too_large`` when it would not fit ``max_record_bytes`` (kafka.message_max_bytes).
    """
    redactors.redact_conversation(conv)
    try:
        value = codec.encode(CONVERSATION, conv)
    except SchemaError as exc:
        raise RowInvalid("schema_violation", str(exc)) from exc
    key = conversation_key(conv)
    if len(value) + len(key) + RECORD_OVERHEAD > max_record_bytes:
        raise RowInvalid(
            "record_too_large",
            f"the conversation encodes to {len(value)} bytes; the record limit "
            f"(kafka.message_max_bytes) is {max_record_bytes}",
        )
    return (topics.conversations, key, value)
