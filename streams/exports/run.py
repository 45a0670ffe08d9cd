"""An export run: build the job's report once, store it, deliver it to every destination.

Contract (:class:`Exporter`, called by :mod:`streams.scheduler` for a data_export run):

1. The report's window is computed from the run's scheduled time in the job's time zone, so a
   run that starts late (missed while no worker was up) still exports the day it was meant to.
2. :func:`~streams.exports.report.build_report` writes every layout in one streaming pass: the
   whole report (uploaded to SFTP and S3 destinations) and, when an e-mail destination is
   named, files of ``exports.rows_per_email_file`` rows (1,000).
3. The files whose links people get are stored in the report store (the e-mail parts when the
   job mails, else the whole report) under the run's id: the execution history lists them with
   signed links valid ``exports.link_ttl_days`` (7). Mails carry those links, never the files.
4. Each destination is delivered independently (:func:`~streams.exports.deliver.deliver`
   never raises for a delivery failure). Status: ``success`` when every destination took it,
   ``partial_success`` when some did, ``delivery_failed`` when none did; ``handler_failed``
   when the report could not be built or stored (nothing delivered).

The local files live in a temporary folder under ``data_dir/tmp`` removed when the run ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.codec import AvroCodec
from streams.control import destinations
from streams.control.errors import NotFoundError
from streams.control.executions import Counts, Delivery
from streams.control.secrets import SecretBox, SecretsError
from streams.errors import MediaStoreError
from streams.exports.deliver import DeliveryFile, DeliveryLink, DeliveryOutcome, deliver
from streams.exports.report import BuiltReport, ReportFile, ReportParams, build_report, window
from streams.exports.storage import ReportStore, StoredReport
from streams.scheduler import RunResult
from streams.settings import Settings

log = logging.getLogger(__name__)


def delivery_status(outcomes: list[Delivery]) -> str:
    """success (all delivered), partial_success (some), delivery_failed (none)."""
    ok = sum(d.ok for d in outcomes)
    if ok == len(outcomes):
        return "success"
    return "partial_success" if ok else "delivery_failed"


def _as_delivery(outcome: DeliveryOutcome) -> Delivery:
    return Delivery(
        connector_id=outcome.connector_id,
        name=outcome.name,
        type=outcome.type,
        ok=outcome.ok,
        error=outcome.error,
        delivered=outcome.delivered,
    )


def delivery_files(files: list[ReportFile]) -> list[DeliveryFile]:
    """Report files as the deliverer takes them."""
    return [DeliveryFile(f.path, f.name, f.rows, f.bytes, f.content_type) for f in files]


def delivery_links(stored: list[StoredReport]) -> list[DeliveryLink]:
    """Stored report files as links in a mail (each has a url: they were just stored)."""
    return [DeliveryLink(s.name, s.rows, s.url or "", s.expires_at) for s in stored]


class ReportBuilder:
    """Builds a tenant's report into a temporary folder and stores the files people download."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        codec: AvroCodec,
        store: ReportStore,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.codec = codec
        self.store = store

    def workdir(self) -> Path:
        """A fresh folder for one build (the caller removes it)."""
        root = self.settings.data_dir / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="report-", dir=root))

    async def build(
        self,
        tenant: str,
        params: ReportParams,
        *,
        now: dt.datetime,
        tz: ZoneInfo,
        out_dir: Path,
        base_name: str,
        layouts: list[int | None],
    ) -> BuiltReport:
        """Write the report in ``layouts`` (see :func:`build_report`)."""
        return await build_report(
            self.engine,
            self.codec,
            self.settings,
            tenant,
            params,
            now=now,
            tz=tz,
            out_dir=out_dir,
            base_name=base_name,
            rows_per_file=layouts,
        )

    async def keep(
        self, tenant: str, files: list[ReportFile], execution_id: str | None, now: dt.datetime
    ) -> list[StoredReport]:
        """Store ``files`` for ``exports.link_ttl_days`` and return them with signed links."""
        ttl = dt.timedelta(days=self.settings.exports.link_ttl_days)
        return await self.store.save(
            self.engine, tenant, files, execution_id=execution_id, now=now, ttl=ttl
        )


class Exporter:
    """Runs data_export jobs (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        box: SecretBox,
        builder: ReportBuilder,
        clock_now: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.box = box
        self.builder = builder
        self.now = clock_now

    async def __call__(self, job: Any, execution_id: str, scheduled_for: dt.datetime) -> RunResult:
        """Run one export of ``job`` (a ``jobs`` row) as run ``execution_id``."""
        params = ReportParams.model_validate_json(job.report)
        tz = ZoneInfo(job.timezone)
        targets, missing = await self._destinations(job)
        mails = any(t.type == "email" for t in targets)
        per_mail = self.settings.exports.rows_per_email_file
        local = scheduled_for.astimezone(tz)
        base = f"{job.name}-{local:%Y%m%d-%H%M}"
        since, until = window(params, scheduled_for, tz)
        work = self.builder.workdir()
        try:
            try:
                built = await self.builder.build(
                    job.tenant,
                    params,
                    now=scheduled_for,
                    tz=tz,
                    out_dir=work,
                    base_name=base,
                    layouts=[None, per_mail] if mails else [None],
                )
                whole = built.layouts[None]
                linked = built.layouts[per_mail] if mails else whole
                stored = await self.builder.keep(job.tenant, linked, execution_id, self.now())
            except (OSError, SQLAlchemyError, MediaStoreError, ValueError) as exc:
                log.exception("export run %s: the report could not be built", execution_id)
                return RunResult("handler_failed", error=f"the report could not be built: {exc}")
            counts = Counts(files=len(stored), rows_exported=built.rows)
            subject = (
                f"callstream report {job.name!r}: {built.rows} row(s), "
                f"{since.astimezone(tz):%Y-%m-%d %H:%M} to {until.astimezone(tz):%Y-%m-%d %H:%M}"
            )
            outcomes = await asyncio.gather(
                *(
                    deliver(
                        self.settings,
                        t,
                        delivery_files(whole),
                        delivery_links(stored),
                        subject=subject,
                    )
                    for t in targets
                )
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        deliveries = missing + [_as_delivery(o) for o in outcomes]
        status = delivery_status(deliveries)
        failed = [f"{d.name}: {d.error}" for d in deliveries if not d.ok]
        return RunResult(
            status,
            counts=counts,
            deliveries=deliveries,
            error="; ".join(failed) if failed else None,
        )

    async def _destinations(self, job: Any) -> tuple[list[destinations.Destination], list[Any]]:
        found, missing = [], []
        for ident in json.loads(job.connectors):
            try:
                found.append(
                    await destinations.get_destination(self.engine, self.box, job.tenant, ident)
                )
            except (NotFoundError, SecretsError) as exc:
                reason = (
                    "the export connector was deleted"
                    if isinstance(exc, NotFoundError)
                    else "its secrets cannot be decrypted"
                )
                missing.append(
                    Delivery(connector_id=ident, name=ident, type="unknown", ok=False, error=reason)
                )
        return found, missing
