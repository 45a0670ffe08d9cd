"""Topic names and their creation.

Names are ``<prefix>.<name>.v<major>``; a breaking schema change gets a new major. Keys are
tenant-scoped (``<tenant>/<connector>/<path>`` for file events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic callstream reads or writes, for one prefix."""

    prefix: str = "callstream"

    @property
    def file_arrivals(self) -> str:
        """FileArrival events: one per complete file version."""
        return f"{self.prefix}.file-arrivals.v1"

    @property
    def file_outcomes(self) -> str:
        """FileOutcome events: downstream committed (or rejected) a file version."""
        return f"{self.prefix}.file-outcomes.v1"

    def all(self) -> list[str]:
        """Every topic name."""
        return [self.file_arrivals, self.file_outcomes]


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
    log.info("created topics %s", ", ".join(created))
    return created
