"""kafka.client_config: what every client honours, what is refused at config load, no secrets."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
import yaml

from streams import security
from streams.app import broker_credentials
from streams.errors import ConfigError
from streams.settings import load_settings

SCRAM = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "svc",
    "sasl.password": "pa55-word-never-shown",
}


def _config_file(tmp_path: Path, client_config: dict[str, str]) -> Path:
    path = tmp_path / "callstream.yaml"
    doc = {"kafka": {"bootstrap_servers": "kafka-1:9092", "client_config": client_config}}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sasl_over_tls_becomes_faust_sasl_credentials_with_a_verifying_context() -> None:
    creds = broker_credentials(SCRAM)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("svc", "pa55-word-never-shown")
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname
    assert "pa55" not in repr(creds)


def test_sasl_without_tls_and_plaintext() -> None:
    creds = broker_credentials({**SCRAM, "security.protocol": "sasl_plaintext"})
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.ssl_context is None
    assert broker_credentials({}) is None
    assert broker_credentials({"security.protocol": "PLAINTEXT", "client.id": "x"}) is None


def test_tls_with_own_ca_and_no_host_name_check(tmp_path: Path) -> None:
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    creds = broker_credentials(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(ca),
            "ssl.endpoint.identification.algorithm": "none",
        }
    )
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert not creds.context.check_hostname


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"sasl.kerberos.service.name": "kafka"}, "sasl.kerberos.service.name: not supported"),
        ({"ssl.keystore.location": "/k.p12"}, "ssl.keystore.location: not supported"),
        ({"enable.ssl.certificate.verification": "false"}, "enable.ssl.certificate.verification"),
        ({"bootstrap.servers": "x:9092"}, "set kafka.bootstrap_servers instead"),
        ({"security.protocol": "TLS"}, "security.protocol: 'TLS' is not one of"),
        ({"security.protocol": "SASL_SSL"}, "sasl.mechanism: required"),
        ({**SCRAM, "sasl.mechanism": "GSSAPI"}, "sasl.mechanism: 'GSSAPI' is not one of"),
        ({**SCRAM, "sasl.mechanism": "OAUTHBEARER"}, "is not one of PLAIN, SCRAM-SHA-256"),
        ({**SCRAM, "sasl.password": ""}, "sasl.password: required"),
        ({"sasl.username": "u"}, "sasl.username: set, but security.protocol PLAINTEXT"),
        ({"ssl.ca.location": "/ca.pem"}, "ssl.ca.location: set, but security.protocol PLAINTEXT"),
        ({**SCRAM, "ssl.ca.location": "/nowhere/ca.pem"}, "'/nowhere/ca.pem' does not exist"),
        (
            {"security.protocol": "SSL", "ssl.certificate.location": "/etc/hostname"},
            "needs both ssl.certificate.location and ssl.key.location",
        ),
        (
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"},
            "'dns' is not https or none",
        ),
    ],
)
def test_what_the_processors_could_not_honour_is_refused(
    config: dict[str, str], expected: str
) -> None:
    found = security.problems(config)
    assert any(expected in line for line in found), found
    assert not any("pa55" in line for line in found)


def test_librdkafka_only_properties_pass_and_are_named() -> None:
    config = {**SCRAM, "client.id": "cs", "socket.keepalive.enable": "true"}
    assert security.problems(config) == []
    line = security.describe(config)
    assert line == (
        "SASL_SSL, SCRAM-SHA-512 as 'svc', CA system store, "
        "librdkafka-only: client.id, socket.keepalive.enable"
    )


def test_config_load_names_the_field_and_hides_the_password(tmp_path: Path) -> None:
    path = _config_file(
        tmp_path, {**SCRAM, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"}
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (line,) = info.value.problems
    assert line.startswith("kafka.client_config: sasl.mechanism: 'GSSAPI' is not one of")
    assert "pa55" not in str(info.value)


def test_settings_repr_and_check_config_never_show_the_password(tmp_path: Path) -> None:
    path = _config_file(
        tmp_path,
        {**SCRAM, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256"},
    )
    assert "pa55" not in repr(load_settings(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "streams", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "kafka security: SASL_PLAINTEXT, SCRAM-SHA-256 as 'svc'" in result.stdout
    assert "pa55" not in result.stdout + result.stderr
