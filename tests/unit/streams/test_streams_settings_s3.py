"""S3 connectors in the settings: loading, field paths in errors, secrets, overlapping prefixes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from connectors.s3 import S3Config
from streams.errors import ConfigError
from streams.settings import Settings, load_settings, store_scope

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CALLSTREAM_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, stores: str) -> Settings:
    """Settings with one connector per store block (YAML, indented as a list item's body)."""
    blocks = "".join(
        f"      - name: c{i}\n        store:\n{textwrap.indent(textwrap.dedent(block), ' ' * 10)}"
        for i, block in enumerate(stores.split("---"))
    )
    path = tmp_path / "callstream.yaml"
    path.write_text(f"tenants:\n  - id: acme\n    connectors:\n{blocks}", encoding="utf-8")
    return load_settings(path)


def problems(tmp_path: Path, stores: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, stores)
    return "\n".join(info.value.problems)


def test_an_s3_store_is_loaded_from_yaml(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f"""
        type: s3
        bucket: acme-calls
        prefix: /exports/daily/
        region: eu-west-1
        access_key_id: AKIAEXAMPLE
        secret_access_key: "{SECRET}"
        """,
    )
    store = settings.tenants[0].connectors[0].store
    assert isinstance(store, S3Config)
    assert (store.bucket, store.prefix, store.region) == (
        "acme-calls",
        "exports/daily",
        "eu-west-1",
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_a_missing_secret_is_named_with_its_field_path_and_no_secret_is_echoed(
    tmp_path: Path,
) -> None:
    text = problems(
        tmp_path,
        f"""
        type: s3
        bucket: acme-calls
        access_key_id: AKIAEXAMPLE
        session_token: "{SECRET}"
        """,
    )
    assert "tenants.0.connectors.0.store.s3" in text
    assert "secret_access_key is missing" in text
    assert SECRET not in text


def test_a_bad_field_is_named(tmp_path: Path) -> None:
    text = problems(tmp_path, "type: s3\nbucket: acme-calls\naddressing_style: dns\n")
    assert "tenants.0.connectors.0.store.s3.addressing_style" in text


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("prefix: ''", "prefix: inbox"),  # the whole bucket holds every prefix
        ("prefix: inbox", "prefix: inbox/"),
        ("prefix: inbox", "prefix: inbox/acme"),
    ],
)
def test_overlapping_prefixes_in_one_bucket_are_refused(tmp_path: Path, a: str, b: str) -> None:
    text = problems(
        tmp_path, f"type: s3\nbucket: acme-calls\n{a}\n---\ntype: s3\nbucket: acme-calls\n{b}\n"
    )
    assert "acme/c0 and acme/c1 watch overlapping folders" in text
    assert "same s3 store" in text


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("bucket: acme-calls\nprefix: inbox", "bucket: acme-calls\nprefix: inbox2"),
        ("bucket: acme-calls\nprefix: in/a", "bucket: acme-calls\nprefix: in/b"),
        ("bucket: acme-calls", "bucket: acme-chats"),
        ("bucket: acme-calls", "bucket: acme-calls\nendpoint_url: http://minio.internal:9000"),
    ],
)
def test_separate_prefixes_buckets_and_endpoints_are_fine(tmp_path: Path, a: str, b: str) -> None:
    settings = load(tmp_path, f"type: s3\n{a}\n---\ntype: s3\n{b}\n")
    assert len(settings.tenants[0].connectors) == 2


def test_the_scope_of_an_s3_store_is_endpoint_bucket_and_prefix() -> None:
    aws = S3Config(bucket="acme-calls", prefix="in")
    gcs = S3Config(bucket="acme-calls", endpoint_url="https://Storage.GoogleAPIs.com/")
    assert store_scope(aws) == (("s3", "aws", "acme-calls"), "in")
    assert store_scope(gcs) == (("s3", "https://storage.googleapis.com", "acme-calls"), ".")
