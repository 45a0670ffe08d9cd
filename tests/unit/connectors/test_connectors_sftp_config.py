"""SftpConfig validation and host-key pins (no server: nothing here connects)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import paramiko
import pytest
from pydantic import ValidationError

from connectors.sftp import SftpConfig, fingerprint_of_pin

PASSWORD = "hunter2-Pa55word"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-not-real\n"
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def ecdsa_key() -> paramiko.ECDSAKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture(scope="module")
def key_line(ecdsa_key: paramiko.ECDSAKey) -> str:
    return f"{ecdsa_key.get_name()} {ecdsa_key.get_base64()}"


def openssh_fingerprint(key: paramiko.PKey) -> str:
    """What `ssh-keygen -lf` prints for the key: SHA256 of the blob, base64 without padding."""
    digest = hashlib.sha256(base64.b64decode(key.get_base64())).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def config(key_line: str, **fields: Any) -> SftpConfig:
    return SftpConfig.model_validate(
        {"host": "sftp.example.com", "username": "acme", "host_key": key_line, **fields}
    )


def error_messages(exc: ValidationError) -> str:
    return "\n".join(str(e["msg"]) for e in exc.errors())


# -- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        {"password": PASSWORD},
        {"private_key": PRIVATE_KEY},
        {"private_key": PRIVATE_KEY, "private_key_passphrase": PASSPHRASE},
        {"private_key_path": "/etc/callstream/id_ed25519"},
    ],
)
def test_exactly_one_credential_is_accepted(key_line: str, credential: dict[str, str]) -> None:
    cfg = config(key_line, **credential)
    assert cfg.type == "sftp"
    assert cfg.port == 22
    assert cfg.root == "/"


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        ({}, "set exactly one of password, private_key or private_key_path"),
        (
            {"private_key_passphrase": PASSPHRASE},
            "set exactly one of password, private_key or private_key_path",
        ),
        (
            {"password": PASSWORD, "private_key": PRIVATE_KEY},
            "set exactly one of password, private_key or private_key_path",
        ),
        (
            {"password": PASSWORD, "private_key_path": "/k"},
            "set exactly one of password, private_key or private_key_path",
        ),
        (
            {"password": PASSWORD, "private_key": PRIVATE_KEY, "private_key_path": "/k"},
            "set exactly one of password, private_key or private_key_path",
        ),
        (
            {"private_key": PRIVATE_KEY, "private_key_path": "/k"},
            "set private_key or private_key_path, not both",
        ),
    ],
)
def test_anything_but_exactly_one_credential_is_refused(
    key_line: str, credential: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        config(key_line, **credential)
    assert message in error_messages(info.value)


def test_private_key_path_is_a_path(key_line: str) -> None:
    cfg = config(key_line, private_key_path="/etc/callstream/id_ed25519")
    assert cfg.private_key_path == Path("/etc/callstream/id_ed25519")


@pytest.mark.parametrize(
    "field", [{"port": 0}, {"port": 65536}, {"connect_timeout_seconds": 0}, {"oops": 1}]
)
def test_other_fields_are_validated(key_line: str, field: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        config(key_line, password=PASSWORD, **field)


def test_host_key_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        SftpConfig.model_validate({"host": "h", "username": "u", "password": PASSWORD})
    assert [e["loc"] for e in info.value.errors()] == [("host_key",)]


# -- host-key pins ------------------------------------------------------------------------------


def test_a_key_line_pin_is_accepted(key_line: str) -> None:
    assert config(key_line, password=PASSWORD).host_key == key_line


def test_a_key_line_with_a_comment_is_accepted(key_line: str) -> None:
    config(f"  {key_line} root@sftp.example.com  ", password=PASSWORD)


def test_a_fingerprint_pin_is_accepted(ecdsa_key: paramiko.ECDSAKey) -> None:
    pin = openssh_fingerprint(ecdsa_key)
    assert config(pin, password=PASSWORD).host_key == pin


@pytest.mark.parametrize(
    "pin",
    [
        "ssh-ed25519",
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "ssh-ed25519 not*base64!",
        "ssh-ed25519 AAAA$AAA=",  # decodes only if stray characters are dropped
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJ",
        # a known_hosts line (host name first) is not a key line
        "sftp.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okW",
        "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
        "sha256:abc",
    ],
)
def test_a_malformed_host_key_is_refused(pin: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(pin, password=PASSWORD)
    assert [e["loc"] for e in info.value.errors()] == [()]
    assert "host_key" in error_messages(info.value)


@pytest.mark.parametrize("pin", ["", "   "])
def test_a_blank_host_key_means_not_pinned_yet(pin: str) -> None:
    # Test connection of a connector not saved yet shows the key to pin; the store refuses
    # to connect until one is (tests/integration/test_probe.py).
    assert config(pin, password=PASSWORD).host_key == ""


@pytest.mark.parametrize("pin", ["SHA256:", "SHA256:not a fingerprint!"])
def test_a_malformed_fingerprint_pin_is_refused(pin: str) -> None:
    with pytest.raises(ValidationError):
        config(pin, password=PASSWORD)


def test_fingerprint_of_a_key_line_is_the_openssh_fingerprint(
    ecdsa_key: paramiko.ECDSAKey, key_line: str
) -> None:
    expected = openssh_fingerprint(ecdsa_key)
    assert fingerprint_of_pin(key_line) == expected
    assert fingerprint_of_pin(f"{key_line} comment") == expected
    assert len(expected) == len("SHA256:") + 43


def test_fingerprint_of_other_key_types_is_the_openssh_fingerprint() -> None:
    key = paramiko.RSAKey.generate(2048)
    line = f"{key.get_name()} {key.get_base64()}"
    assert fingerprint_of_pin(line) == openssh_fingerprint(key)


def test_different_keys_have_different_fingerprints(key_line: str) -> None:
    other = paramiko.ECDSAKey.generate()
    assert fingerprint_of_pin(key_line) != fingerprint_of_pin(
        f"{other.get_name()} {other.get_base64()}"
    )


def test_a_fingerprint_pin_stands_for_itself(ecdsa_key: paramiko.ECDSAKey, key_line: str) -> None:
    fp = openssh_fingerprint(ecdsa_key)
    assert fingerprint_of_pin(fp) == fp
    assert fingerprint_of_pin(f" {fp}= ") == fp  # padding and blanks from copy-paste
    assert fingerprint_of_pin(fp) == fingerprint_of_pin(key_line)


def test_fingerprint_of_pin_raises_value_error_on_garbage() -> None:
    with pytest.raises(ValueError, match="host_key"):
        fingerprint_of_pin("not a key")


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        {"password": PASSWORD},
        {"private_key": PRIVATE_KEY, "private_key_passphrase": PASSPHRASE},
    ],
)
def test_secrets_are_not_shown(key_line: str, credential: dict[str, str]) -> None:
    cfg = config(key_line, **credential)
    shown = [repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.model_dump()), f"{cfg}"]
    for text in shown:
        for secret in (PASSWORD, PRIVATE_KEY.strip(), "not-real", PASSPHRASE):
            assert secret not in text
    assert "acme" in repr(cfg)  # the rest is still readable


def test_secrets_are_still_usable(key_line: str) -> None:
    cfg = config(key_line, private_key=PRIVATE_KEY, private_key_passphrase=PASSPHRASE)
    assert cfg.private_key is not None
    assert cfg.private_key.get_secret_value() == PRIVATE_KEY
    assert cfg.private_key_passphrase is not None
    assert cfg.private_key_passphrase.get_secret_value() == PASSPHRASE


def test_validation_errors_do_not_echo_the_password(key_line: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(key_line, password=PASSWORD, private_key=PRIVATE_KEY)
    assert PASSWORD not in error_messages(info.value)


# -- keepalive and timeouts ---------------------------------------------------------------------


def test_every_wait_is_bounded_by_default(key_line: str) -> None:
    cfg = config(key_line, password=PASSWORD)
    assert cfg.connect_timeout_seconds == 10
    assert cfg.keepalive_seconds == 15
    assert cfg.operation_timeout_seconds == 30


@pytest.mark.parametrize(
    "field",
    [
        {"operation_timeout_seconds": 0},
        {"operation_timeout_seconds": -1},
        {"connect_timeout_seconds": 0},
        {"keepalive_seconds": -5},
    ],
)
def test_unbounded_or_negative_waits_are_refused(key_line: str, field: dict[str, float]) -> None:
    with pytest.raises(ValidationError) as info:
        config(key_line, password=PASSWORD, **field)
    assert [e["loc"] for e in info.value.errors()] == [(next(iter(field)),)]


def test_keepalive_zero_turns_it_off(key_line: str) -> None:
    assert config(key_line, password=PASSWORD, keepalive_seconds=0).keepalive_seconds == 0
