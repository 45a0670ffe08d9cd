"""What API handlers may use: the running service's parts, passed explicitly (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from streams.clock import Clock, SystemClock
from streams.codec import AvroCodec
from streams.control.secrets import SecretBox
from streams.metrics import Metrics
from streams.redact import Redactors, tenant_redactors
from streams.settings import Settings
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.cases.store import CaseStore
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
    redaction: Redactors | None = None
    """Each tenant's redaction of turn text (the service's ``redactors``)."""

    def redactors(self) -> Redactors:
        """The tenants' redactors: the service's, else made once from settings and secrets."""
        if self.redaction is None:
            box = self.secrets or SecretBox.from_settings(
                self.settings.api.secret_keys, self.settings.data_dir
            )
            self.redaction = tenant_redactors(self.settings.tenants, box.derive_keys)
        return self.redaction
