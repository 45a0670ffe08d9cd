"""Errors of the application layer.

::

    CallstreamError
     ├── ConfigError            settings or a schema are invalid; ``problems`` name each field
     ├── SchemaError            a record does not match its Avro schema
     ├── PublishError           Kafka did not acknowledge a record (``retriable`` per librdkafka)
     └── MediaStoreError        the media store (S3) failed a copy; ``retriable`` when it is an
                                outage, refused credentials or a missing bucket (an operator or
                                time fixes those), not when the request itself was wrong

File-store errors come from :mod:`connectors.errors`; the connector runner retries those with
back-off per connector.
"""

from __future__ import annotations


class CallstreamError(Exception):
    """Base of the application's own errors."""

    retriable: bool = False


class ConfigError(CallstreamError):
    """Invalid configuration; ``problems`` holds one 'field.path: message' line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class SchemaError(CallstreamError):
    """A record does not match its Avro schema, or a schema file is invalid."""


class PublishError(CallstreamError):
    """Kafka refused or timed out a record."""

    def __init__(self, message: str, *, retriable: bool = True, code: str | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.code = code
        """librdkafka's error name (``MSG_SIZE_TOO_LARGE``, ...), when there is one."""


class MediaStoreError(CallstreamError):
    """The media store could not keep a recording or raw row (see :mod:`streams.media`)."""

    def __init__(self, message: str, *, retriable: bool = True, code: str | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.code = code
        """The store's error code (``NoSuchBucket``, ``SlowDown``, ...), when there is one."""
