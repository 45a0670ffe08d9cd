"""Connector operations on a real SQLite database: validation, masking, merge patches,
tenant scoping, overlaps, key pairs, re-encryption and the runner's catalog."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.local import LocalConfig
from streams.cli import cli
from streams.control import connectors as ops
from streams.control import tenants
from streams.control.audit import audit_log
from streams.control.catalog import Catalog
from streams.control.connectors import ConnectorIn, connectors
from streams.control.errors import ConflictError, NotFoundError
from streams.control.secrets import SecretBox
from streams.db import Database
from streams.settings import ConnectorSettings, Settings, TenantSettings

PIN = "SHA256:" + "A" * 43
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    inbox = tmp_path / "config-inbox"
    return Settings(
        data_dir=tmp_path,
        demo=False,
        tenants=[
            TenantSettings(
                id="acme",
                connectors=[ConnectorSettings(name="from-file", store=LocalConfig(root=inbox))],
            )
        ],
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db:
        for tenant in ("acme", "globex"):
            await tenants.create(db.engine, tenants.TenantIn(id=tenant, name=tenant), "test")
        yield db.engine


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode()])


def sftp_in(name: str = "crm", root: str = "/upload", **store: Any) -> ConnectorIn:
    base = {"type": "sftp", "host": "sftp.example.com", "username": "acme", "host_key": PIN}
    base.update({"password": PASSWORD, "root": root} | store)
    return ConnectorIn.model_validate({"name": name, "store": base})


async def test_created_connector_shows_secrets_masked_and_the_table_holds_no_plaintext(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    out = await ops.create(engine, box, settings, "acme", sftp_in(), "key:1")
    shown = out.model_dump_json()
    assert PASSWORD not in shown and '"password":"**********"' in shown
    assert out.secrets == {
        "store.password": True,
        "store.private_key": False,
        "store.private_key_passphrase": False,
    }
    assert out.origin == "api" and out.revision == 1 and out.id.startswith("conn_")
    async with engine.connect() as conn:
        raw = [tuple(r) for r in await conn.execute(select(connectors))]
        trail = [tuple(r) for r in await conn.execute(select(audit_log))]
    assert PASSWORD not in repr(raw) and PASSWORD not in repr(trail)
    got = await ops.get(engine, settings, "acme", out.id)
    assert got == out


async def test_store_errors_name_the_field_path() -> None:
    with pytest.raises(ValidationError) as info:
        sftp_in(port=70000)
    assert [e["loc"] for e in info.value.errors()] == [("store", "port")]


async def test_api_only_rules_name_the_field(
    engine: AsyncEngine, box: SecretBox, settings: Settings, tmp_path: Path
) -> None:
    cases = [
        (sftp_in(password=None, private_key_path="/etc/ssh/key"), "store.private_key_path"),
        (
            ConnectorIn.model_validate({"name": "l", "store": {"type": "local", "root": "/etc"}}),
            "store.root",
        ),
        (
            ConnectorIn.model_validate(
                {"name": "n", "store": {"type": "local", "root": str(tmp_path / "local/acme\x00")}}
            ),
            "store.root",
        ),
        (
            ConnectorIn.model_validate(
                {
                    "name": "big",
                    "store": {"type": "local", "root": str(tmp_path / "local/acme/in")},
                    "ingest": {"max_row_bytes": 5_000_000, "max_document_bytes": 5_000_000},
                }
            ),
            "ingest.max_row_bytes",
        ),
    ]
    for data, field in cases:
        with pytest.raises(ValidationError) as info:
            await ops.create(engine, box, settings, "acme", data, "t")
        assert [".".join(map(str, e["loc"])) for e in info.value.errors()] == [field]
    inside = {"name": "ok", "store": {"type": "local", "root": str(tmp_path / "local/acme/in")}}
    assert (await ops.create(engine, box, settings, "acme", ConnectorIn(**inside), "t")).id


async def test_a_patch_keeps_omitted_and_masked_secrets_and_bumps_the_revision(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    out = await ops.create(engine, box, settings, "acme", sftp_in(), "t")
    same = await ops.patch(engine, box, settings, "acme", out.id, {"store": {"port": 22}}, "t")
    assert same.revision == 1  # nothing changed: no restart
    shown = same.model_dump(mode="json")
    changed = await ops.patch(
        engine, box, settings, "acme", out.id, {"store": {**shown["store"], "port": 2222}}, "t"
    )
    assert changed.revision == 2 and changed.store["port"] == 2222
    async with engine.connect() as conn:
        row = (await conn.execute(select(connectors))).one()
    assert ops.runnable(row, box).settings.store.password.get_secret_value() == PASSWORD  # type: ignore[union-attr]
    reset = await ops.patch(
        engine, box, settings, "acme", out.id, {"store": {"password": "new-secret"}}, "t"
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(connectors))).one()
    assert reset.revision == 3
    assert ops.runnable(row, box).settings.store.password.get_secret_value() == "new-secret"  # type: ignore[union-attr]
    with pytest.raises(ValidationError) as info:
        await ops.patch(engine, box, settings, "acme", out.id, {"store": {"port": 0}}, "t")
    assert info.value.errors()[0]["loc"] == ("store", "port")
    with pytest.raises(ConflictError, match="name cannot change"):
        await ops.patch(engine, box, settings, "acme", out.id, {"name": "other"}, "t")


async def test_another_tenants_connector_is_not_found_everywhere(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    out = await ops.create(engine, box, settings, "acme", sftp_in(), "t")
    with pytest.raises(NotFoundError):
        await ops.get(engine, settings, "globex", out.id)
    with pytest.raises(NotFoundError):
        await ops.patch(engine, box, settings, "globex", out.id, {"enabled": False}, "t")
    with pytest.raises(NotFoundError):
        await ops.generate_keypair(engine, box, settings, "globex", out.id, "t")
    with pytest.raises(NotFoundError):
        await ops.remove(engine, settings, "globex", out.id, "t")
    with pytest.raises(NotFoundError):
        await ops.get(engine, settings, "globex", "cfg_from-file")  # acme's config connector
    assert (await ops.list_page(engine, settings, "globex", None, 10)) == ([], False)


async def test_overlapping_folders_are_refused_naming_only_the_callers_own_connector(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    await ops.create(engine, box, settings, "acme", sftp_in("crm", "/upload"), "t")
    with pytest.raises(ConflictError, match="'crm'"):
        await ops.create(engine, box, settings, "acme", sftp_in("nested", "/upload/sub"), "t")
    with pytest.raises(ConflictError) as info:
        await ops.create(engine, box, settings, "globex", sftp_in("mine", "/upload"), "t")
    assert "another tenant" in str(info.value) and "crm" not in str(info.value)
    with pytest.raises(ConflictError, match="already used"):
        await ops.create(engine, box, settings, "acme", sftp_in("crm", "/elsewhere"), "t")
    with pytest.raises(ConflictError, match="config file"):
        await ops.create(engine, box, settings, "acme", sftp_in("from-file", "/other"), "t")


async def test_config_connectors_are_listed_read_only_and_pages_mix_both(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    for name in ("a-first", "m-middle", "z-last"):
        await ops.create(engine, box, settings, "acme", sftp_in(name, f"/{name}"), "t")
    names, after = [], None
    while True:
        items, more = await ops.list_page(engine, settings, "acme", after, 2)
        names += [(i.name, i.origin) for i in items]
        if not more:
            break
        after = items[-1].name
    assert names == [
        ("a-first", "api"),
        ("from-file", "config"),
        ("m-middle", "api"),
        ("z-last", "api"),
    ]
    with pytest.raises(ConflictError, match="edit the config file"):
        await ops.patch(engine, box, settings, "acme", "cfg_from-file", {"enabled": False}, "t")
    with pytest.raises(ConflictError, match="edit the config file"):
        await ops.remove(engine, settings, "acme", "cfg_from-file", "t")


async def test_a_generated_key_pair_is_stored_encrypted_and_its_public_half_shown(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    out = await ops.create(engine, box, settings, "acme", sftp_in(), "t")
    keyed = await ops.generate_keypair(engine, box, settings, "acme", out.id, "t")
    assert keyed.public_key is not None
    kind, blob, comment = keyed.public_key.split()
    assert (kind, comment) == ("ssh-ed25519", "callstream-acme-crm")
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    assert keyed.public_key_fingerprint == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert keyed.secrets["store.private_key"] and not keyed.secrets["store.password"]
    async with engine.connect() as conn:
        row = (await conn.execute(select(connectors))).one()
    assert "PRIVATE KEY" not in repr(tuple(row))
    private = ops.runnable(row, box).settings.store.private_key.get_secret_value()  # type: ignore[union-attr]
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert key.get_base64() == blob
    created = await ops.create(
        engine,
        box,
        settings,
        "acme",
        ConnectorIn.model_validate(
            {
                "name": "gen",
                "generate_keypair": True,
                "store": {"type": "sftp", "host": "h2", "username": "u", "host_key": PIN},
            }
        ),
        "t",
    )
    assert created.public_key and created.public_key.endswith(" callstream-acme-gen")


async def test_re_encrypt_moves_every_secret_to_the_first_key(
    engine: AsyncEngine, settings: Settings
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await ops.create(engine, SecretBox([old]), settings, "acme", sftp_in(), "t")
    assert await ops.re_encrypt(engine, SecretBox([new, old])) == 1
    async with engine.connect() as conn:
        row = (await conn.execute(select(connectors))).one()
    assert ops.runnable(row, SecretBox([new])).settings.name == "crm"


async def test_the_catalog_leaves_out_disabled_connectors_and_tenants(
    engine: AsyncEngine, box: SecretBox, settings: Settings
) -> None:
    catalog = Catalog(settings, engine, box)
    out = await ops.create(engine, box, settings, "acme", sftp_in(), "t")
    await ops.create(engine, box, settings, "globex", sftp_in("g", "/g"), "t")
    desired = await catalog.desired()
    assert set(desired) == {("acme", "from-file"), ("acme", "crm"), ("globex", "g")}
    assert desired[("acme", "crm")].settings.store.password.get_secret_value() == PASSWORD  # type: ignore[union-attr]
    before = desired[("acme", "crm")].revision
    await ops.patch(engine, box, settings, "acme", out.id, {"poll": {"interval_seconds": 9}}, "t")
    assert (await catalog.desired())[("acme", "crm")].revision != before
    await ops.patch(engine, box, settings, "acme", out.id, {"enabled": False}, "t")
    await tenants.set_status(engine, "globex", "disabled", "t")
    assert set(await catalog.desired()) == {("acme", "from-file")}
    found = await catalog.find("acme", "crm")  # files announced before still find it
    assert found is not None and found.settings.enabled is False
    await ops.remove(engine, settings, "acme", out.id, "t")
    assert await catalog.find("acme", "crm") is None


def test_the_cli_re_encrypts_with_the_first_configured_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = f"sqlite+aiosqlite:///{tmp_path / 'callstream.db'}"
    config = Settings(data_dir=tmp_path, demo=False)

    async def seed() -> None:
        async with Database(url) as db:
            await tenants.create(db.engine, tenants.TenantIn(id="acme", name="a"), "t")
            await ops.create(db.engine, SecretBox([old]), config, "acme", sftp_in(), "t")

    asyncio.run(seed())
    env = {
        "CALLSTREAM_DATA_DIR": str(tmp_path),
        "CALLSTREAM_API__SECRET_KEYS": json.dumps([new, old]),
    }
    result = CliRunner().invoke(cli, ["connectors", "re-encrypt"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-encrypted the secrets of 1 connector(s)" in result.output

    async def check() -> str:
        async with Database(url) as db, db.engine.connect() as conn:
            row = (await conn.execute(select(connectors))).one()
        return ops.runnable(row, SecretBox([new])).settings.name

    assert asyncio.run(check()) == "crm"
    env["CALLSTREAM_API__SECRET_KEYS"] = json.dumps([Fernet.generate_key().decode()])
    result = CliRunner().invoke(cli, ["connectors", "re-encrypt"], env=env)
    assert result.exit_code == 1 and "cannot be decrypted" in result.output
