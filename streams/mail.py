"""Outgoing mail through the operator's SMTP relay (settings ``mail:``).

Contract:

* :func:`open_session` connects to ``mail.host:mail.port`` and, per ``mail.security``, wraps the
  connection in TLS at once (``tls``, usually port 465), upgrades it with STARTTLS (``starttls``:
  the relay must offer it, or the session is refused rather than sending in clear) or stays in
  clear (``none``, for a relay on loopback). It then logs in when ``mail.username`` is set. Each
  step that fails raises :class:`MailError` naming the step (``connect``, ``ehlo``, ``starttls``,
  ``auth``), so "test connection" can say which one broke.
* :func:`send` delivers one message in a worker thread (smtplib blocks), with the configured
  ``From``; a refused recipient or any SMTP error is a :class:`MailError`. The password is never
  logged nor put in an error.
* Certificates are verified against the system store, or ``mail.ca_file`` where the relay uses
  a private CA; ``mail.host`` unset means mail is off, and every call raises ``MailError``.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from streams.settings import MailSettings

__all__ = ["MailError", "compose", "open_session", "send"]


class MailError(RuntimeError):
    """Mail could not be sent; ``step`` names what failed (connect, ehlo, starttls, auth, send)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


def _tls_context(settings: MailSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def open_session(settings: MailSettings) -> smtplib.SMTP:
    """Connect, secure and log in as the settings say; the caller quits the session.

    Blocking: call it from a worker thread.
    """
    if not settings.host:
        raise MailError("connect", "mail is off: set mail.host (the SMTP relay)")
    timeout = settings.timeout_seconds
    try:
        if settings.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=timeout, context=_tls_context(settings)
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError("connect", f"{settings.host}:{settings.port}: {exc}") from exc
    try:
        _secure_and_login(smtp, settings)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _secure_and_login(smtp: smtplib.SMTP, settings: MailSettings) -> None:
    try:
        smtp.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError("ehlo", str(exc)) from exc
    if settings.security == "starttls":
        if not smtp.has_extn("starttls"):
            raise MailError("starttls", f"{settings.host} does not offer STARTTLS")
        try:
            smtp.starttls(context=_tls_context(settings))
            smtp.ehlo()
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError("starttls", str(exc)) from exc
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        try:
            smtp.login(settings.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError("auth", f"the relay refused user {settings.username!r}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError("auth", str(exc)) from exc


def compose(settings: MailSettings, to: list[str], subject: str, text: str) -> EmailMessage:
    """A plain-text message from ``mail.from_address`` to ``to``."""
    msg = EmailMessage()
    msg["From"] = settings.from_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2] or None)
    msg.set_content(text)
    return msg


def _send(settings: MailSettings, message: EmailMessage) -> None:
    smtp = open_session(settings)
    try:
        refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError("send", f"every recipient was refused: {sorted(exc.recipients)}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError("send", str(exc)) from exc
    finally:
        try:
            smtp.quit()
        except (TimeoutError, OSError, smtplib.SMTPException):
            smtp.close()
    if refused:
        raise MailError("send", f"recipients refused: {sorted(refused)}")


async def send(settings: MailSettings, message: EmailMessage) -> None:
    """Send ``message`` through the relay (in a worker thread); :class:`MailError` on failure."""
    await asyncio.to_thread(_send, settings, message)
