"""The store registry: every store type by name, and the settings' union knows them all."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from connectors.local import LocalConfig, LocalStore
from connectors.registry import STORE_TYPES, open_store
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpConfig, SftpStore
from streams.settings import StoreConfig

HOST_KEY = "SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ"


def test_each_config_builds_its_store_without_connecting(tmp_path: Path) -> None:
    local = open_store(LocalConfig(root=tmp_path / "nowhere"))
    sftp = open_store(SftpConfig(host="h", username="u", password="p", host_key=HOST_KEY))
    s3 = open_store(S3Config(bucket="acme-calls"))
    assert isinstance(local, LocalStore)
    assert isinstance(sftp, SftpStore)
    assert isinstance(s3, S3Store)


def test_the_settings_union_holds_exactly_the_registered_configs() -> None:
    union = typing.get_args(typing.get_args(StoreConfig)[0])
    assert set(union) == {t.config for t in STORE_TYPES.values()}
    for name, kind in STORE_TYPES.items():
        assert kind.config.model_fields["type"].default == name


def test_an_unknown_store_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown store type 'ftp'"):
        open_store(S3Config.model_construct(type="ftp"))  # type: ignore[arg-type]
