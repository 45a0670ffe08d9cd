"""aiosmtpd on loopback: a real SMTP server with STARTTLS and AUTH that keeps every message.

Contract:

* ``SmtpServer(base_dir)`` does no I/O; ``start()`` writes a self-signed certificate for
  127.0.0.1/localhost to ``base_dir`` (``ca_file``: clients verify against it), starts aiosmtpd
  in its own thread on a free port offering STARTTLS and AUTH PLAIN/LOGIN (after STARTTLS only),
  checks it answers EHLO and returns. Failure raises :class:`~servers.ServerStartError`.
* Logins are checked: ``username``/``password`` succeed, anything else is refused (535).
* ``messages`` holds every accepted message, oldest first, as
  :class:`email.message.EmailMessage` with ``X-Envelope-To`` set to the envelope recipients;
  :meth:`wait_for` waits for the messages a predicate selects. ``stop()`` is idempotent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from servers import ServerStartError, free_port

__all__ = ["SmtpServer"]


def _self_signed(base_dir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = base_dir / "smtp-cert.pem", base_dir / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Keep:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        assert isinstance(msg, EmailMessage)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self.server.lock:
            self.server.messages.append(msg)
        return "250 Message accepted for delivery"


class SmtpServer:
    """A private SMTP server on 127.0.0.1 that keeps what it receives (see module doc)."""

    username = "callstream"
    password = "smtp-pass-1"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.ca_file = base_dir / "smtp-cert.pem"
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.username.encode()
            and data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Start the server (see the module doc)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = _self_signed(self.base_dir)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert_file, key_file)
        self.port = free_port()
        self._controller = Controller(
            _Keep(self),
            hostname=self.host,
            port=self.port,
            tls_context=tls,
            authenticator=self._authenticate,
            auth_require_tls=True,
        )
        try:
            self._controller.start()
            with smtplib.SMTP(self.host, self.port, timeout=10) as probe:
                code, _ = probe.ehlo()
                if code != 250 or not probe.has_extn("starttls"):
                    raise ServerStartError("aiosmtpd", f"EHLO answered {code} without STARTTLS")
        except (OSError, RuntimeError, smtplib.SMTPException) as exc:
            self.stop()
            if isinstance(exc, ServerStartError):
                raise
            raise ServerStartError(
                "aiosmtpd", f"could not start on port {self.port}: {exc}"
            ) from exc

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self._controller is not None:
            controller, self._controller = self._controller, None
            controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        """Every message whose envelope named ``address``, oldest first."""
        with self.lock:
            return [m for m in self.messages if address in m["X-Envelope-To"].split(", ")]

    def wait_for(
        self, select: Callable[[EmailMessage], bool], count: int = 1, timeout: float = 30.0
    ) -> list[EmailMessage]:
        """Wait until ``count`` messages match ``select``; return them (AssertionError if not)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [m for m in self.messages if select(m)]
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) >= count, f"{len(found)} of {count} expected mails arrived: {found}"
        return found
