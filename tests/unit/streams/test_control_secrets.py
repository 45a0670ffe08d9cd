"""Connector secrets at rest: Fernet keys, rotation, the generated key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from connectors.sftp import SftpConfig
from streams.control.secrets import (
    SecretBox,
    SecretsError,
    join_secrets,
    load_or_create_key,
    split_secrets,
)
from streams.errors import ConfigError
from streams.settings import ConnectorSettings, load_settings

PIN = "SHA256:" + "A" * 43


def test_a_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    box = SecretBox.from_settings([], tmp_path)
    token = box.encrypt({"store.password": "hunter2"})
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = SecretBox.from_settings([], tmp_path)
    assert again.decrypt(token) == {"store.password": "hunter2"}
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary left


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_or_create_key(tmp_path / "k")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(os.listdir(tmp_path)) == 1


def test_rotation_new_key_first_decrypts_old_tokens_and_re_encrypts() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox([old]).encrypt({"store.password": "pw"})
    both = SecretBox([new, old])
    assert both.decrypt(token) == {"store.password": "pw"}
    rotated = both.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == {"store.password": "pw"}
    with pytest.raises(SecretsError, match="re-encrypt"):
        SecretBox([new]).decrypt(token)


def test_a_bad_configured_key_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api.secret_keys.*key 0 is not a Fernet key"):
        load_settings(api={"secret_keys": ["not-a-key"]}, data_dir=tmp_path)


def test_every_secret_field_is_split_out_and_joined_back() -> None:
    conn = ConnectorSettings(
        name="c",
        store=SftpConfig(
            host="h",
            username="u",
            private_key="-----BEGIN KEY-----",
            private_key_passphrase=SecretStr("pass-phrase-x"),
            host_key=PIN,
        ),
    )
    data, values = split_secrets(conn)
    assert values == {
        "store.private_key": "-----BEGIN KEY-----",
        "store.private_key_passphrase": "pass-phrase-x",
    }
    assert data["store"]["private_key"] is None and data["store"]["password"] is None
    assert "pass-phrase-x" not in str(data) and "BEGIN" not in str(data)
    back = ConnectorSettings.model_validate(join_secrets(data, values))
    assert back == conn
