"""The Faust application of the stream processors.

Processing guarantee: at-least-once consumption (Faust's ``exactly_once`` is not trusted here),
idempotent effects downstream. Agents ack a batch only after its effect is durable and never let
an exception escape a batch (Faust's ``take`` acks the batch even when the body raises): they
retry with back-off instead, so no event is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping

import faust
from faust.auth import Credentials

from streams import security
from streams.settings import Settings
from streams.topics import LIVE, Topics


def broker_credentials(client_config: Mapping[str, str]) -> Credentials | None:
    """Translate ``kafka.client_config`` (librdkafka names, checked at config load by
    :func:`streams.security.problems`) into Faust's credentials for aiokafka."""
    sec = security.parse(client_config)
    context = sec.ssl_context() if sec.uses_tls else None
    if sec.uses_sasl:
        return faust.SASLCredentials(
            username=sec.username,
            password=sec.password,
            mechanism=sec.mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings, bootstrap: str, topics: Topics) -> faust.App:
    """Create the processors' Faust app of ``topics.lane`` (no web server, topics created by
    callstream).

    Each lane (:mod:`streams.topics`) has its own app, hence its own consumer and consumer group
    (``<prefix>-processors``, ``<prefix>-processors-bulk``): within one Faust consumer, a
    message for an agent whose buffer is full is awaited in the fetch loop, which then stops
    delivering every other topic (head-of-line blocking), so the live lane must not share the
    bulk lane's consumer. Measured (tests/benchmarks/test_fairness_bench.py, 100,000-row bulk
    file, single-row files every 3 s): both lanes in one app, the small files' upload -> result
    p50 / p99 was 32 s / 105 s; in two apps 2.6 s / 5.0 s.

    The leader-election topic is disabled: callstream uses no leader-only timers or tables, and
    with ``topic_allow_declare=False`` Faust would look for a topic nobody creates.
    """
    return faust.App(
        processors_group(topics),
        broker=f"kafka://{bootstrap}",
        broker_credentials=broker_credentials(settings.kafka.client_config),
        topic_disable_leader=True,
        store="memory://",
        processing_guarantee="at_least_once",
        web_enabled=False,
        topic_allow_declare=False,
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.processors.commit_interval_seconds,
        broker_commit_every=10_000,
        broker_session_timeout=settings.processors.session_timeout_seconds,
        broker_heartbeat_interval=settings.processors.session_timeout_seconds / 4,
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
    )


def processors_group(topics: Topics) -> str:
    """The consumer group (Faust app id) of the processors of ``topics.lane``."""
    suffix = "" if topics.lane == LIVE else f"-{topics.lane}"
    return f"{topics.prefix}-processors{suffix}"


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic whose keys and values are passed through as bytes (we decode Avro ourselves)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw")
