"""How ``kafka.client_config`` reaches every Kafka client, librdkafka and Faust's aiokafka alike.

callstream talks to Kafka through two client libraries: confluent-kafka (librdkafka: the
producer, the admin client, the file-outcome, echo and lag consumers) and aiokafka (the Faust
stream processors). ``kafka.client_config`` is written in librdkafka's property names. The
connection and security properties below are honoured by both libraries::

    security.protocol                      PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl.mechanism (alias sasl.mechanisms) PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl.username, sasl.password
    ssl.ca.location                        PEM file or folder of CA certificates
    ssl.certificate.location, ssl.key.location, ssl.key.password   client certificate
    ssl.endpoint.identification.algorithm  https (default: check the host name) | none

Any other ``security.*``, ``sasl.*`` or ``ssl.*`` property (Kerberos, OAuth, key stores, PEM
strings, ...) and ``enable.ssl.certificate.verification`` are refused at config load: the stream
processors could not connect the way the rest does. Every other property (``client.id``,
``socket.keepalive.enable``, ``debug``, ...) is passed to the librdkafka clients only.
``bootstrap.servers`` belongs in ``kafka.bootstrap_servers``.

Secrets (``sasl.password``, ``ssl.key.password``) are never printed: :func:`describe` shows the
configuration without them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password"})
_SUPPORTED = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)
_SECURITY_PREFIXES = ("security.", "sasl.", "ssl.")
_REFUSED = frozenset({"enable.ssl.certificate.verification", "bootstrap.servers"})


@dataclass(frozen=True)
class KafkaSecurity:
    """The connection security that ``kafka.client_config`` asks for, library-neutral."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = None
    check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        """Whether the broker expects a SASL login."""
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted."""
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext:
        """Build the TLS context aiokafka uses, equivalent to librdkafka's ssl.* settings."""
        ca = Path(self.ca_location) if self.ca_location else None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(ca) if ca is not None and not ca.is_dir() else None,
            capath=str(ca) if ca is not None and ca.is_dir() else None,
        )
        context.check_hostname = self.check_hostname
        if self.certificate_location:
            context.load_cert_chain(
                self.certificate_location, self.key_location, password=self.key_password
            )
        return context


def problems(config: Mapping[str, str]) -> list[str]:
    """Return one ``key: problem`` line per property the clients cannot all honour (see the
    module doc); empty when the configuration is usable. Never includes a secret's value."""
    out: list[str] = []
    for key in sorted(config):
        if key == "bootstrap.servers":
            out.append(f"{key}: set kafka.bootstrap_servers instead")
        elif key in _REFUSED or (key.startswith(_SECURITY_PREFIXES) and key not in _SUPPORTED):
            out.append(
                f"{key}: not supported (the stream processors could not use it); supported "
                f"security properties: {', '.join(sorted(_SUPPORTED))}"
            )
    if out:
        return out
    protocol = config.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        return [f"security.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}"]
    mechanisms = {config[k].upper() for k in ("sasl.mechanism", "sasl.mechanisms") if k in config}
    sasl_keys = sorted(k for k in config if k.startswith("sasl."))
    ssl_keys = sorted(k for k in config if k.startswith("ssl."))
    if protocol.startswith("SASL_"):
        if len(mechanisms) != 1:
            out.append(
                "sasl.mechanism: required with security.protocol "
                f"{protocol} (one of {', '.join(MECHANISMS)})"
            )
        elif (mechanism := next(iter(mechanisms))) not in MECHANISMS:
            out.append(f"sasl.mechanism: {mechanism!r} is not one of {', '.join(MECHANISMS)}")
        for key in ("sasl.username", "sasl.password"):
            if not config.get(key):
                out.append(f"{key}: required with security.protocol {protocol}")
    elif sasl_keys:
        out.append(f"{sasl_keys[0]}: set, but security.protocol {protocol} uses no SASL login")
    if protocol in ("SSL", "SASL_SSL"):
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            if key in config and not Path(config[key]).exists():
                out.append(f"{key}: {config[key]!r} does not exist")
        if ("ssl.certificate.location" in config) != ("ssl.key.location" in config):
            out.append(
                "ssl.certificate.location: a client certificate needs both "
                "ssl.certificate.location and ssl.key.location"
            )
        algorithm = config.get("ssl.endpoint.identification.algorithm", "https").lower()
        if algorithm not in ("https", "none"):
            out.append(f"ssl.endpoint.identification.algorithm: {algorithm!r} is not https or none")
    elif ssl_keys:
        out.append(f"{ssl_keys[0]}: set, but security.protocol {protocol} uses no TLS")
    return out


def parse(config: Mapping[str, str]) -> KafkaSecurity:
    """Return the security settings of a configuration that :func:`problems` accepted."""
    mechanism = config.get("sasl.mechanism") or config.get("sasl.mechanisms")
    return KafkaSecurity(
        protocol=config.get("security.protocol", "PLAINTEXT").upper(),
        mechanism=mechanism.upper() if mechanism else None,
        username=config.get("sasl.username"),
        password=config.get("sasl.password"),
        ca_location=config.get("ssl.ca.location"),
        certificate_location=config.get("ssl.certificate.location"),
        key_location=config.get("ssl.key.location"),
        key_password=config.get("ssl.key.password"),
        check_hostname=config.get("ssl.endpoint.identification.algorithm", "https").lower()
        != "none",
    )


def describe(config: Mapping[str, str]) -> str:
    """One line for people: protocol, mechanism, user and files; never a secret."""
    sec = parse(config)
    parts = [sec.protocol]
    if sec.uses_sasl:
        parts.append(f"{sec.mechanism} as {sec.username!r}")
    if sec.uses_tls:
        parts.append(f"CA {sec.ca_location or 'system store'}")
        if sec.certificate_location:
            parts.append(f"client certificate {sec.certificate_location}")
        if not sec.check_hostname:
            parts.append("host name not checked")
    others = sorted(k for k in config if k not in _SUPPORTED)
    if others:
        parts.append(f"librdkafka-only: {', '.join(others)}")
    return ", ".join(parts)
