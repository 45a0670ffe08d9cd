"""Which connectors should run: the config file's plus those created through the API.

:meth:`Catalog.desired` is what the runner reconciles against (every second): the enabled
connectors of tenants that are not disabled, each with a ``revision`` token that changes when
the connector does (``config`` for config-file connectors, ``api:<id>:<revision>`` for the
others), and whether an enabled data_import job drives it (``scheduled``). :meth:`Catalog.find`
is how the file processor finds a connector of an announced file
(enabled or not, so files announced before a connector was disabled are still processed).

A tenant is disabled only by its row in ``tenants``; a config-file tenant without a row yet
counts as active. With ``redactors``, every :meth:`Catalog.desired` (so every reconcile of the
runner) also reloads the tenants' redaction settings stored through the API into it
(:meth:`Catalog.reload_redaction`): a change made in another process applies here within
``runner.reconcile_interval_seconds``.

An API connector that cannot be loaded (its secrets cannot be decrypted, or its stored
configuration no longer validates) is left out and logged once per revision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control import connectors as api_connectors
from streams.control import jobs
from streams.control.secrets import SecretBox, SecretsError
from streams.control.tenants import redaction_settings, tenants
from streams.redact import Redactors
from streams.settings import ConnectorSettings, Settings

log = logging.getLogger(__name__)

CONFIG_REVISION = "config"


@dataclass(frozen=True, slots=True)
class Entry:
    """One connector to run."""

    tenant: str
    settings: ConnectorSettings
    revision: str
    connector_id: str = ""
    """``conn_...`` (API) or ``cfg_<name>`` (config file): how jobs name it."""
    scheduled: bool = False
    """An enabled data_import job drives it: it announces only when a run asks."""

    @property
    def from_api(self) -> bool:
        """Created through the API: its store is reached only through the SSRF guard."""
        return self.revision != CONFIG_REVISION

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, connector name): how the runner and the file processor know it."""
        return self.tenant, self.settings.name


class Catalog:
    """Config-file connectors, plus the database's when ``engine`` is given (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        box: SecretBox | None = None,
        redactors: Redactors | None = None,
    ) -> None:
        if (engine is None) != (box is None):
            raise ValueError("engine and box go together")
        self.settings = settings
        self.engine = engine
        self.box = box
        self.redactors = redactors
        self._reported: set[tuple[str, int]] = set()

    @property
    def dynamic(self) -> bool:
        """Whether connectors can change while running (they come from the database too)."""
        return self.engine is not None

    def _config(self) -> list[Entry]:
        return [
            Entry(t.id, c, CONFIG_REVISION, api_connectors.CONFIG_PREFIX + c.name)
            for t in self.settings.tenants
            for c in t.connectors
        ]

    async def desired(self) -> dict[tuple[str, str], Entry]:
        """Return the connectors that should be running now, by (tenant, name)."""
        entries = self._config()
        disabled: set[str] = set()
        scheduled: set[tuple[str, str]] = set()
        if self.engine is not None:
            async with self.engine.connect() as conn:
                rows = await conn.execute(select(tenants.c.id).where(tenants.c.status != "active"))
                disabled = {r.id for r in rows}
                await self._reload_redaction(conn)
                entries += await self._stored(conn)
                scheduled = await jobs.scheduled_import_connectors(conn)
        return {
            e.key: replace(e, scheduled=(e.tenant, e.connector_id) in scheduled)
            for e in entries
            if e.settings.enabled and e.tenant not in disabled
        }

    async def reload_redaction(self) -> None:
        """Load the redaction settings stored through the API into ``redactors`` now (at start,
        before any record is redacted; afterwards :meth:`desired` does it)."""
        if self.engine is not None:
            async with self.engine.connect() as conn:
                await self._reload_redaction(conn)

    async def _reload_redaction(self, conn: AsyncConnection) -> None:
        if self.redactors is None:
            return
        generation = self.redactors.generation  # before the read: see Redactors.use_stored
        self.redactors.use_stored(await redaction_settings(conn), generation)

    async def find(self, tenant: str, name: str) -> Entry | None:
        """Return one connector whatever its state, or None when there is no such connector."""
        for entry in self._config():
            if entry.key == (tenant, name):
                return entry
        if self.engine is None:
            return None
        async with self.engine.connect() as conn:
            for entry in await self._stored(conn, tenant, name):
                return entry
        return None

    async def _stored(
        self, conn: AsyncConnection, tenant: str | None = None, name: str | None = None
    ) -> list[Entry]:
        assert self.box is not None  # noqa: S101 - set together with the engine
        out = []
        for row in await api_connectors.stored(conn, tenant, name):
            try:
                found = api_connectors.runnable(row, self.box)
            except (SecretsError, ValidationError) as exc:
                if (row.id, row.revision) not in self._reported:
                    self._reported.add((row.id, row.revision))
                    log.error(
                        "connector %s/%s (%s, revision %d) cannot be loaded and does not run: %s",
                        row.tenant,
                        row.name,
                        row.id,
                        row.revision,
                        _safe(exc),
                    )
                continue
            out.append(Entry(row.tenant, found.settings, f"api:{row.id}:{row.revision}", row.id))
        return out


def _safe(exc: Exception) -> str:
    """Describe a load failure without any input value (it may hold a secret)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    return str(exc)
