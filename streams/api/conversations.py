"""``POST /v1/conversations``: the standard ingest API (seed 001 §6.2.1).

Thin: the rules live in :mod:`streams.control.ingest` (and, below it, the parser's).
"""

from __future__ import annotations

from typing import Any

from pydantic import RootModel, SkipValidation, ValidationError

from streams.api.problems import ApiError, BadRequest, FieldError, Unprocessable, field_errors
from streams.api.routing import ApiRoutes, Call
from streams.control.ingest import (
    MAX_ITEMS,
    ConversationBatchIn,
    ConversationIn,
    IngestParts,
    IngestResult,
    ingest,
)
from streams.deadletters import DeadLetters
from streams.errors import PublishError
from streams.media_s3 import open_media_store

routes = ApiRoutes("conversations", "Push conversations (the standard ingest API).")


class ServiceUnavailable(ApiError):
    """503: a part the request needs (Kafka) did not answer; retry with the same key."""

    status, title = 503, "Service Unavailable"


class ConversationsBody(RootModel[SkipValidation[ConversationIn | ConversationBatchIn]]):
    """One conversation, or ``{"items": [...]}`` with 1 to 1,000."""


def check_shape(data: Any) -> None:
    """Refuse (422, every field at once, nothing published) a body that does not match the
    documented schema: not a conversation nor a batch of 1 to 1,000, unknown fields, wrong
    JSON types. The rules files obey are judged per item afterwards."""
    if not isinstance(data, dict):
        raise Unprocessable(
            'the body must be a conversation object or {"items": [...]}',
            [FieldError(field="(body)", message="expected a JSON object")],
        )
    if "items" in data:
        _check_batch(data)
    model = ConversationBatchIn if "items" in data else ConversationIn
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable(
            "the body does not match the ConversationIn schema", field_errors(exc)
        ) from exc


def _check_batch(data: dict[str, Any]) -> None:
    """Refuse a batch that is not a list of 1 to 1,000, with a message saying so."""
    items = data["items"]
    extra = sorted(k for k in data if k != "items")
    errors = [FieldError(field=k, message="unknown field next to items") for k in extra]
    if not isinstance(items, list):
        errors.append(FieldError(field="items", message="expected a list of conversations"))
    elif not items:
        errors.append(FieldError(field="items", message="at least one conversation"))
    elif len(items) > MAX_ITEMS:
        errors.append(
            FieldError(
                field="items",
                message=f"at most {MAX_ITEMS:,} conversations per request; got {len(items):,}",
            )
        )
    if errors:
        raise Unprocessable("invalid batch", errors)


@routes.post(
    "/v1/conversations",
    summary="Push one conversation or a batch of up to 1,000",
    body=ConversationsBody,
    response=IngestResult,
    status=202,
    errors=(400, 409, 422, 503),
    description=(
        "A body that does not match this schema (unknown fields, wrong JSON types, more than "
        "1,000 items) is refused whole with 422. Then each item is validated by the same rules "
        "as file rows and answered as accepted (it flows through Kafka to its case and result) "
        "or rejected (reason codes and field paths; it is kept as a dead letter you can fix "
        "and replay). The answer comes after "
        "Kafka acknowledged the accepted items. Send an `Idempotency-Key` header to retry "
        "safely: the same key and body get the same answer and no second effect; the same key "
        "with another body is 409. The tenant is the API key's; an item naming another "
        "tenant is rejected (tenant_mismatch)."
    ),
)
async def ingest_conversations(call: Call) -> IngestResult:
    """Validate and publish the pushed conversations; answer per item."""
    data = call.body.root
    check_shape(data)
    key = call.request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise BadRequest("Idempotency-Key must have 1 to 255 characters")
    ctx = call.ctx
    if ctx.producer is None:
        raise ServiceUnavailable("this process does not publish to Kafka")
    limit = ctx.settings.kafka.message_max_bytes
    media = ctx.media or open_media_store(ctx.settings)
    parts = IngestParts(
        ctx.engine,
        ctx.codec,
        ctx.topics,
        ctx.producer,
        DeadLetters(ctx.codec, ctx.topics, ctx.metrics, media, limit, ctx.redactors()),
        limit,
        ctx.redactors(),
    )
    try:
        return await ingest(parts, call.tenant, data, key)
    except PublishError as exc:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge the records ({exc.code or 'error'}); nothing is lost: "
            "retry with the same Idempotency-Key"
        ) from exc
