"""Topic names and their creation.

Names are ``<prefix>.<name>.v<major>``; a breaking schema change gets a new major. Keys are
tenant-scoped (``<tenant>/<connector>/<path>`` for file events).

Lanes: file arrivals and the conversations read from files travel in one of two lanes, each
with its own topics and its own consumer group (:func:`streams.app.create_app`), so a tenant's
bulk file never delays another tenant's small file or platform event. A file of at least
``processors.bulk_file_bytes`` goes to the bulk lane (:func:`lane_of`); every other file, and
every platform or pushed conversation, to the live lane. :meth:`Topics.in_lane` gives the view
of one lane: its ``file_arrivals`` and ``conversations`` are that lane's topics, every other
topic is shared.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streams.errors import ConfigError

log = logging.getLogger(__name__)

Lane = Literal["live", "bulk"]
LIVE: Lane = "live"
BULK: Lane = "bulk"
LANES: tuple[Lane, ...] = (LIVE, BULK)


def lane_of(size: int, bulk_file_bytes: int) -> Lane:
    """The lane of a file of ``size`` bytes: bulk at or above ``bulk_file_bytes`` (0: every
    file is live)."""
    return BULK if bulk_file_bytes > 0 and size >= bulk_file_bytes else LIVE


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic callstream reads or writes, for one prefix, seen from one lane."""

    prefix: str = "callstream"
    lane: Lane = LIVE
    """The lane whose ``file_arrivals`` and ``conversations`` this view names."""

    def in_lane(self, lane: Lane) -> Topics:
        """The view of ``lane`` (same prefix)."""
        return replace(self, lane=lane)

    def _laned(self, name: str) -> str:
        return f"{self.prefix}.{name}-bulk.v1" if self.lane == BULK else f"{self.prefix}.{name}.v1"

    @property
    def file_arrivals(self) -> str:
        """FileArrival events of this lane: one per complete file version."""
        return self._laned("file-arrivals")

    @property
    def file_outcomes(self) -> str:
        """FileOutcome events: downstream committed (or rejected) a file version."""
        return f"{self.prefix}.file-outcomes.v1"

    @property
    def conversations(self) -> str:
        """Conversation records of this lane: validated, one per conversation version read."""
        return self._laned("conversations")

    @property
    def dead_letter(self) -> str:
        """DeadLetter records: rejected rows and files, with reason codes."""
        return f"{self.prefix}.dead-letter.v1"

    @property
    def cases(self) -> str:
        """CaseEvent records: a case opened or updated."""
        return f"{self.prefix}.cases.v1"

    @property
    def analysis_results(self) -> str:
        """AnalysisResult records: the feedback topic contact-centre platforms consume."""
        return f"{self.prefix}.analysis-results.v1"

    @property
    def source_records(self) -> str:
        """SourceRecord records: new, changed or deleted rows of a tenant's source types."""
        return f"{self.prefix}.source-records.v1"

    def all(self) -> list[str]:
        """Every topic name (both lanes)."""
        bulk = self.in_lane(BULK)
        live = self.in_lane(LIVE)
        return [
            live.file_arrivals,
            bulk.file_arrivals,
            self.file_outcomes,
            live.conversations,
            bulk.conversations,
            self.dead_letter,
            self.cases,
            self.analysis_results,
            self.source_records,
        ]


def ensure_topics(
    admin: AdminClient, names: list[str], partitions: int, replication: int, timeout: float = 30
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    _wait_until_visible(admin, missing, timeout)
    log.info("created topics %s", ", ".join(created))
    return created


def check_record_limit(
    admin: AdminClient, names: list[str], limit: int, timeout: float = 30
) -> None:
    """Raise ConfigError if a topic accepts smaller records than ``limit`` (our producer's
    message.max.bytes): such records would be refused by the broker after the fact."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    problems = []
    for resource, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = fut.result().get("max.message.bytes")
        if entry is not None and int(entry.value) < limit:
            problems.append(
                f"kafka.message_max_bytes: {limit} exceeds topic {resource.name}'s "
                f"max.message.bytes ({entry.value}); lower the setting or raise the topic's limit"
            )
    if problems:
        raise ConfigError(problems)


def _wait_until_visible(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until every topic has leaders in the metadata: a consumer subscribing earlier
    gets UNKNOWN_TOPIC_OR_PART and only looks again after a full metadata refresh interval."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        ready = [
            n
            for n in names
            if n in topics
            and topics[n].error is None
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
        ]
        if len(ready) == len(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"topics not visible after {timeout}s: {sorted(set(names) - set(ready))}"
            )
        time.sleep(0.1)
