"""Delivery of an export's files to one export connector, and the connector's connection test.

:func:`deliver` takes the files of a report (already written locally by the report builder)
and, per the connector's type:

- ``sftp`` / ``s3``: uploads each file under its ``name`` into the remote folder / under the
  prefix, streaming it from disk (:meth:`connectors.base.FileStore.write`: a reader never sees
  a half-written file), in a worker thread;
- ``email``: sends ONE mail to the connector's addresses listing every download link (name,
  rows, expiry) through the operator's relay (settings ``mail:``). Never an attachment: the
  files stay in the report store and the links point at callstream.

A delivery failure (unreachable host, refused host key or credentials, no write permission,
mail off or refused) is an outcome with ``ok = False`` and a message saying what failed, never
an exception and never a secret: the export run records it per destination (success / partial
success / delivery failed) and goes on with the next destination.

:func:`check_destination` is the connection test of an export connector, a
:class:`~connectors.probe.ProbeReport`: SFTP resolve, connect, host_key, authenticate, write,
delete (a probe file ``.callstream-probe-<hex>`` in the remote folder); S3 resolve, write,
delete (a probe object under the prefix); e-mail addresses, connect, ehlo, starttls (when
``mail.security`` is starttls), auth (when ``mail.username`` is set) — no mail is sent.
Connectors made through the API connect only where the SSRF guard (``api.connect_allow``)
allows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connectors.errors import ConnectorError
from connectors.netguard import AddressGuard
from connectors.probe import DEFAULT_TIMEOUT_SECONDS, ProbeReport, StepFailed, probe, run_steps
from connectors.registry import open_store
from connectors.s3 import S3Config
from connectors.sftp import SftpConfig
from streams.control.destinations import Destination, EmailConfig
from streams.mail import MailError, compose, open_session, send
from streams.runner import guard_for
from streams.settings import MailSettings, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryFile:
    """One file of a report, on local disk, to upload as ``name`` (a relative path)."""

    path: Path
    name: str
    rows: int
    bytes: int
    content_type: str


@dataclass(frozen=True, slots=True)
class DeliveryLink:
    """One signed download link of a report file, for an e-mail delivery."""

    name: str
    rows: int
    url: str
    expires_at: dt.datetime


@dataclass(slots=True)
class DeliveryOutcome:
    """What became of one delivery: ``ok``, else ``error`` (for people, no secret);
    ``delivered`` names what reached the destination (file names, or link names mailed)."""

    connector_id: str
    name: str
    type: str
    ok: bool
    error: str | None = None
    delivered: list[str] = field(default_factory=list)


async def deliver(
    settings: Settings,
    destination: Destination,
    files: Sequence[DeliveryFile],
    links: Sequence[DeliveryLink],
    *,
    subject: str,
    guard_from_api: bool = True,
) -> DeliveryOutcome:
    """Deliver an export's ``files`` (sftp, s3) or ``links`` (email) to ``destination``
    (see the module doc); never raises for a delivery failure. A disabled destination is a
    failed delivery ("disabled"). ``subject`` is the mail's subject (email only)."""
    outcome = DeliveryOutcome(destination.id, destination.name, destination.type, ok=False)
    if not destination.enabled:
        outcome.error = f"export connector {destination.name!r} is disabled"
        return outcome
    config = destination.config
    try:
        if isinstance(config, EmailConfig):
            await _mail_links(settings.mail, config, links, subject, outcome)
        else:
            guard = guard_for(settings, guard_from_api)
            await asyncio.to_thread(_upload, config, guard, files, outcome)
        outcome.ok = True
    except ConnectorError as exc:
        outcome.error = str(exc)
    except MailError as exc:
        outcome.error = f"mailing the links through the relay failed at {exc}"
    except Exception as exc:  # a bug must still leave a status for this destination
        log.exception("delivering to export connector %s failed unexpectedly", destination.id)
        outcome.error = f"unexpected error: {type(exc).__name__}: {exc}"
    return outcome


def _upload(
    config: SftpConfig | S3Config,
    guard: AddressGuard | None,
    files: Sequence[DeliveryFile],
    outcome: DeliveryOutcome,
) -> None:
    """Connect and write every file, streaming it from disk (blocking: a worker thread)."""
    store = open_store(config, guard)
    try:
        store.connect()
        for item in files:
            try:
                with item.path.open("rb") as src:
                    store.write(item.name, src)
            except ConnectorError as exc:
                raise ConnectorError(f"uploading {item.name!r}: {exc}") from exc
            except OSError as exc:
                raise ConnectorError(f"reading the report file {item.name!r}: {exc}") from exc
            outcome.delivered.append(item.name)
    finally:
        store.close()


def mail_text(links: Sequence[DeliveryLink]) -> str:
    """The body of an export mail: one paragraph per link (name, rows, URL, expiry)."""
    lines = ["Your callstream export is ready. Download links:", ""]
    for link in links:
        expires = link.expires_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines += [
            f"{link.name} ({link.rows} rows)",
            link.url,
            f"(valid until {expires})",
            "",
        ]
    lines.append("Each link works until it expires; no file is attached to this mail.")
    return "\n".join(lines) + "\n"


async def _mail_links(
    mail: MailSettings,
    config: EmailConfig,
    links: Sequence[DeliveryLink],
    subject: str,
    outcome: DeliveryOutcome,
) -> None:
    if not links:
        raise MailError("send", "the export has no download link to mail")
    message = compose(mail, list(config.to), subject, mail_text(links))
    await send(mail, message)
    outcome.delivered.extend(link.name for link in links)


# -- connection test -------------------------------------------------------------------------------


async def check_destination(
    settings: Settings,
    config: SftpConfig | S3Config | EmailConfig,
    *,
    guard_from_api: bool = True,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> ProbeReport:
    """Test an export connector's configuration step by step (module doc), off the loop."""
    if isinstance(config, EmailConfig):
        return await asyncio.to_thread(_mail_probe, settings.mail, config, timeout_seconds)
    guard = guard_for(settings, guard_from_api)
    return await asyncio.to_thread(probe, config, guard, timeout_seconds, write=True)


def _mail_probe(mail: MailSettings, config: EmailConfig, timeout: float) -> ProbeReport:
    """The e-mail checks: the addresses, then the relay session step by step; nothing sent."""
    bounded = mail.model_copy(update={"timeout_seconds": min(mail.timeout_seconds, timeout)})
    relay = f"{mail.host}:{mail.port}" if mail.host else "(mail off)"
    outcome: dict[str, MailError | None] = {}

    def session() -> MailError | None:
        if "result" not in outcome:
            try:
                smtp = open_session(bounded)
            except MailError as exc:
                outcome["result"] = exc
            else:
                outcome["result"] = None
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
        return outcome["result"]

    def step(name: str, passed: str) -> tuple[str, dict[str, object]]:
        error = session()
        if error is not None and error.step == name:
            raise StepFailed(f"{relay}: {error}", {"error": name, "relay": relay})
        return passed, {"relay": relay}

    def addresses() -> tuple[str, dict[str, object]]:
        count = len(config.to)
        return (
            f"{count} valid address{'es' if count != 1 else ''}",
            {"addresses": len(config.to)},
        )

    steps = [
        ("addresses", addresses),
        ("connect", lambda: step("connect", f"connected to the relay {relay}")),
        ("ehlo", lambda: step("ehlo", "the relay answered EHLO")),
    ]
    if mail.security == "starttls":
        steps.append(("starttls", lambda: step("starttls", "the session is encrypted (STARTTLS)")))
    if mail.username:
        steps.append(("auth", lambda: step("auth", f"logged in as {mail.username!r}")))
    secret = mail.password.get_secret_value() if mail.password else ""
    return run_steps("email", f"smtp://{relay}", steps, [secret], timeout)
