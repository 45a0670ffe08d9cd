"""What API handlers may use: the running service's parts, passed explicitly (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from streams.clock import Clock, SystemClock
from streams.codec import AvroCodec
from streams.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.cases.store import CaseStore
    from streams.control.secrets import SecretBox
    from streams.exports.run import ReportBuilder
    from streams.kafka import Producer
    from streams.media import MediaStore
    from streams.runner import ConnectorRunner
    from streams.scheduler import Scheduler


@dataclass
class ApiContext:
    """The service parts handlers reach; ``None`` where this process does not run that part.

    Every table handlers read or write lives in ``engine``'s database; tenant-scoped queries
    must filter by ``call.tenant`` (see :mod:`streams.api.routing`).
    """

    settings: Settings
    engine: AsyncEngine
    codec: AvroCodec
    topics: Topics
    metrics: Metrics
    producer: Producer | None = None
    runner: ConnectorRunner | None = None
    cases: CaseStore | None = None
    media: MediaStore | None = None
    secrets: SecretBox | None = None
    """Encrypts connector secrets (the service's ``secrets``)."""
    reports: ReportBuilder | None = None
    """Builds and stores reports ("email me"); None where scheduler.enabled is off."""
    scheduler: Scheduler | None = None
    """Runs jobs (trigger now); None where scheduler.enabled is off."""
    clock: Clock = field(default_factory=SystemClock)
    """The time report links, jobs and notices go by (a ManualClock in tests)."""
