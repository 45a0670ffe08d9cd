"""The failure policy of every processing stage, stated once.

::

    transient  a broker, database, network or remote store is unavailable
               -> retried with back-off, forever; counted; one log line a minute
    permanent  anything about the input (encoding, quoting, schema, size, names)
               -> never retried: the caller dead-letters the row or file with a reason code
    unknown    anything else (a bug)
               -> retried ``max_attempts`` times, then the caller isolates the poison record
                  (bisecting a batch) and dead-letters it as ``processing_failed``

:func:`classify` sorts an exception into one of the three; :func:`attempt` applies the policy to
one effect and raises :class:`GaveUp` when the caller must dead-letter. Nothing is acknowledged
before its effect is durable, so a record can stall its partition only while a dependency is
down, never because of what it contains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from confluent_kafka import KafkaException
from sqlalchemy import exc as sa

from connectors.errors import AuthenticationFailed, ConnectorError, HostKeyMismatch
from streams.errors import MediaStoreError, PublishError, SchemaError
from streams.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger(__name__)

#: librdkafka error names that are about the record itself.
_RECORD_ERRORS = frozenset(
    {"MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "CORRUPT_MESSAGE"}
)


class Failure(StrEnum):
    """The three kinds of failure (a bounded metric label)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


class GaveUp(Exception):
    """A permanent failure, or an unknown one that outlived its attempts."""

    def __init__(self, what: str, cause: BaseException, kind: Failure, attempts: int) -> None:
        super().__init__(f"{what}: {type(cause).__name__}: {cause}"[:2000])
        self.cause = cause
        self.kind = kind
        self.attempts = attempts


def classify(exc: BaseException) -> Failure:
    """Sort ``exc`` into transient, permanent or unknown (see the module doc)."""
    if isinstance(exc, AuthenticationFailed | HostKeyMismatch):
        # The store's credentials or host key, not the file: an operator fixes them while the
        # file waits (dead-lettering every file during a key rotation would lose them).
        return Failure.TRANSIENT
    if isinstance(exc, ConnectorError):
        return Failure.TRANSIENT if exc.retriable else Failure.PERMANENT
    if isinstance(exc, PublishError):
        if exc.code in _RECORD_ERRORS:
            return Failure.PERMANENT
        # Authorization, unknown topic, broker down: an operator or time fixes these.
        return Failure.TRANSIENT
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        if err is not None and err.name() in _RECORD_ERRORS:
            return Failure.PERMANENT
        return Failure.TRANSIENT
    if isinstance(exc, SchemaError):
        return Failure.PERMANENT
    if isinstance(exc, MediaStoreError):
        # Not about the input (that is MediaRejected): an outage waits; a refused request is
        # a bug or a misconfiguration the bounded retries and processing_failed report.
        return Failure.TRANSIENT if exc.retriable else Failure.UNKNOWN
    if isinstance(exc, sa.DataError):
        return Failure.PERMANENT  # the database refused a value: input, not the database
    if isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError):
        return Failure.TRANSIENT
    if isinstance(exc, sa.TimeoutError | sa.ResourceClosedError):
        return Failure.TRANSIENT
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(exc, ConnectionError | TimeoutError):
        return Failure.TRANSIENT
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
        return Failure.TRANSIENT  # disk full, I/O error on the media store: wait for a fix
    return Failure.UNKNOWN


class _Throttle:
    """Lets a repeated message through once per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self.suppressed = 0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        self.suppressed += 1
        return False


async def attempt(
    what: str,
    effect: Callable[[], Awaitable[T]],
    *,
    stage: str,
    metrics: Metrics,
    max_attempts: int = 3,
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Await ``effect()`` under the policy; raise :class:`GaveUp` when the caller must
    dead-letter. Cancellation (shutdown) always goes through at once."""
    delay = initial_delay
    unknown = 0
    throttle = _Throttle()
    while True:
        try:
            return await effect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # sorted by the policy right below; nothing is swallowed
            kind = classify(exc)
            metrics.processing_failures.labels(stage=stage, kind=str(kind)).inc()
            if kind is Failure.PERMANENT:
                raise GaveUp(what, exc, kind, unknown + 1) from exc
            if kind is Failure.UNKNOWN:
                unknown += 1
                if unknown >= max_attempts:
                    log.error("%s failed %d times, giving up: %r", what, unknown, exc)
                    raise GaveUp(what, exc, kind, unknown) from exc
                log.warning("%s failed (attempt %d of %d): %r", what, unknown, max_attempts, exc)
                await asyncio.sleep(min(delay, max_delay))
                continue
            if throttle.ready():
                more = (
                    f" ({throttle.suppressed} more since the last line)"
                    if throttle.suppressed
                    else ""
                )
                throttle.suppressed = 0
                log.error(
                    "%s: %s unavailable, retrying until it is back: %s%s",
                    what,
                    _dependency(exc),
                    exc,
                    more,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def _dependency(exc: BaseException) -> str:
    if isinstance(exc, PublishError | KafkaException):
        return "Kafka"
    if isinstance(exc, sa.SQLAlchemyError):
        return "the database"
    if isinstance(exc, ConnectorError):
        return "the file store"
    if isinstance(exc, MediaStoreError):
        return "the media store"
    return "a dependency"
