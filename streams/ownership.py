"""Which connectors a worker polls: Kafka's group membership decides, not home-made locks.

Every process running the ``connectors`` role consumes ``<prefix>.file-outcomes.v1`` in one
consumer group, ``<prefix>.connector-runner`` (:class:`streams.runner.OutcomeConsumer`). File
outcomes are keyed ``<tenant>/<connector>``, so all of one connector's outcomes are in one
partition, :func:`partition_of` its key: ``crc32(key) % partitions``, which is what librdkafka's
default partitioner (``consistent_random``) computes for a non-empty key. A worker **owns**
exactly the connectors whose partition the group assigned to it: it polls them, announces their
files and applies their outcomes; every other worker leaves them alone.

The group protocol does the rest, as in Kafka Connect's distributed mode:

- a worker that dies (SIGKILL, lost host) stops heartbeating; after the session timeout
  (``processors.session_timeout_seconds``) the broker gives its partitions, and so its
  connectors, to the live workers, which load each connector's durable state
  (:class:`~streams.state.ConnectorState`) and resume where it was;
- a worker that joins takes a share at the next rebalance (cooperative-sticky: only the moved
  partitions change hands, the others keep polling);
- a worker stops a revoked connector inside the revoke callback, before the rebalance
  completes, so two live workers never poll one connector at the same time. A worker cut off
  from Kafka loses its partitions (the ``on_lost`` callback) and stops polling them too.

Up to ``partitions`` workers share connectors (the file-outcomes topic's partition count,
``kafka.partitions`` when callstream created it); more stay idle and take over when one dies.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Literal

from streams.health import NotReady

Placement = Literal["here", "elsewhere", "nowhere"]
"""Where a connector runs: this worker; another one (or not started here yet); none (not
wanted: deleted, disabled, its tenant disabled)."""


class ConnectorMoved(Exception):
    """The connector stopped on this worker (moved to another, or the worker stops) during a
    job's import run; ``announced`` lists the (file_id, connector, path) versions the run
    announced here before that. The scheduler hands the rest of the run to the new owner."""

    def __init__(self, announced: list[tuple[str, str, str]]) -> None:
        super().__init__("the connector moved to another worker during the run")
        self.announced = announced


def worker_name() -> str:
    """This process's name in the runs it claims and the health it reports (host:pid:random)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(3)}"


def connector_key(tenant: str, connector: str) -> str:
    """The Kafka key of a connector's file outcomes (and its ownership)."""
    return f"{tenant}/{connector}"


def partition_of(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner picks for a non-empty ``key``."""
    return zlib.crc32(key.encode()) % partitions


class Ownership:
    """The partitions of the file-outcomes topic this worker was assigned, and so the
    connectors it owns.

    Written from the consumer's thread (rebalance callbacks), read from the event loop; every
    change replaces an immutable set, so a reader never sees a half-made one.
    """

    def __init__(self) -> None:
        self.partitions = 0
        """The topic's partition count (0 until the first assignment: owns nothing)."""
        self.assigned: frozenset[int] = frozenset()
        self._settled = threading.Event()
        self._lock = threading.Lock()

    def owns(self, tenant: str, connector: str) -> bool:
        """Tell whether this worker polls ``tenant``'s ``connector``."""
        n = self.partitions
        return n > 0 and partition_of(connector_key(tenant, connector), n) in self.assigned

    def add(self, partitions: int, added: set[int]) -> None:
        """Partitions were assigned (all of them after an eager revoke, the new ones under the
        cooperative protocol: a union is right for both)."""
        with self._lock:
            self.partitions = partitions
            self.assigned = self.assigned | added
        self._settled.set()

    def remove(self, removed: set[int]) -> None:
        """Partitions were revoked or lost."""
        with self._lock:
            self.assigned = self.assigned - removed

    @property
    def settled(self) -> bool:
        """The group assigned this worker its share at least once (possibly nothing)."""
        return self._settled.is_set()

    async def wait_settled(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the first assignment; tell whether it came."""
        return await asyncio.to_thread(self._settled.wait, seconds)


def connector_group_check(ownership: Ownership) -> Callable[[], Awaitable[str]]:
    """Readiness (:mod:`streams.health`): the connector group has given this worker its share
    (possibly none: a standby beyond the partition count is ready, not broken)."""

    async def check() -> str:
        if not ownership.settled:
            raise NotReady("waiting for the connector group's first assignment")
        return f"{len(ownership.assigned)} of {ownership.partitions} connector partition(s)"

    return check
