"""Import connectors of a tenant, created and changed through the API (and the config file's).

A connector is validated by the very models of the config file (:class:`ConnectorIn` is
:class:`~streams.settings.ConnectorSettings`), with the same cross-checks: record sizes that
fit Kafka, no two connectors watching the same or nested folders (another tenant's connector is
not named), no name used twice in a tenant (config-file connectors included). Two more rules
hold for connectors made through the API: ``store.private_key_path`` is refused (a tenant does
not name files on our servers; send ``private_key`` or generate a key pair), and a ``local``
store must lie inside ``<data_dir>/local/<tenant>/``.

Storage (table ``connectors``): the configuration as JSON with every secret replaced by the mask
``**********``, and the secrets themselves in one Fernet token (:mod:`streams.control.secrets`).
Responses therefore show secrets masked without decrypting anything; ``secrets`` tells which
ones hold a value. ``revision`` grows with each change; the runner restarts a connector whose
revision changed (:mod:`streams.control.catalog`).

Updates are JSON merge patches (RFC 7396) of the connector as :func:`get` shows it: a member
sets a value, ``null`` resets it to its default, an omitted member (or a secret sent back as the
mask) keeps its value; a patch whose ``store.type`` differs replaces the whole store. ``name``
cannot change (it keys the connector's durable state): create a new connector instead.

Config-file connectors are listed with ``origin = "config"`` and id ``cfg_<name>``; changing
them here is a :class:`ConflictError` (edit the config file).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import secrets as random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from connectors.poller import PollConfig
from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.secrets import SecretBox, join_secrets, split_secrets
from streams.db import metadata
from streams.ingest.parse import ParseSettings
from streams.ingest.recordings import RecordingSettings
from streams.settings import (
    ConnectorSettings,
    Settings,
    StoreConfig,
    size_problems,
    stores_overlap,
)

log = logging.getLogger(__name__)

MASK = "**********"
"""How a secret that holds a value is shown (pydantic's own mask of ``SecretStr``)."""
CONFIG_PREFIX = "cfg_"
ID_PREFIX = "conn_"

connectors = Table(
    "connectors",
    metadata,
    Column("id", String(32), primary_key=True),  # conn_<16 hex>
    Column("tenant", String(64), nullable=False),
    Column("name", String(63), nullable=False),
    Column("type", String(16), nullable=False),  # store type: sftp, s3, local
    Column("config", Text, nullable=False),  # JSON, secrets masked
    Column("secrets", Text),  # Fernet token of {field path: value}; NULL: no secret
    Column("public_key", String(200)),  # OpenSSH line of a generated key pair
    Column("enabled", Boolean, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(100), nullable=False),
    UniqueConstraint("tenant", "name", name="uq_connectors_tenant_name"),
)


def flat_store_errors(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate a store union and name errors ``store.port``, not ``store.sftp.port``
    (also used for the ``config`` union of export connectors)."""
    try:
        return handler(value)
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            if loc and loc[0] in ("sftp", "s3", "local", "email"):
                loc = loc[1:]
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError(err["type"], "{message}", {"message": err["msg"]}),
                    loc=loc,
                    input=err.get("input"),
                )
            )
        raise ValidationError.from_exception_data(exc.title, details) from None


class ConnectorIn(ConnectorSettings):
    """A connector to create: the config file's connector model, plus ``generate_keypair``."""

    generate_keypair: bool = Field(
        False,
        description="SFTP only, with no password or private key given: generate an Ed25519 "
        "key pair; the response shows the public key for the server's authorized_keys.",
    )

    @model_validator(mode="before")
    @classmethod
    def _keypair_and_json_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = with_generated_key(data, "store", "sftp stores")
        strict({k: v for k, v in data.items() if k != "generate_keypair"})
        return data

    @field_validator("store", mode="wrap")
    @classmethod
    def _store(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return flat_store_errors(value, handler)

    def settings(self) -> ConnectorSettings:
        """The connector as the runner runs it."""
        return ConnectorSettings.model_validate(self.model_dump(exclude={"generate_keypair"}))


class _Checked(ConnectorSettings):
    """A patched connector, validated with flat store error paths."""

    @field_validator("store", mode="wrap")
    @classmethod
    def _store(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return flat_store_errors(value, handler)


def strict(data: dict[str, Any]) -> ConnectorSettings:
    """Validate JSON data as a connector taking JSON's types as they are ("5" is no integer,
    true no number): the API documents JSON types, the config file's YAML is read leniently."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):  # not JSON data: the lenient validation names the problem
        return _Checked.model_validate(data)
    return _Checked.model_validate_json(text, strict=True)


class ConnectorPatch(BaseModel):
    """A JSON merge patch of a connector (see the module doc): only the members to change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Must equal the current name (names are fixed).")
    enabled: bool | None = Field(None, description="false: the connector stops polling.")
    store: dict[str, Any] | None = Field(
        None,
        description="Store members to change; secrets omitted or sent as the mask are kept; "
        "null removes a member.",
        examples=[{"port": 2222, "password": "new secret"}],
    )
    poll: dict[str, Any] | None = Field(None, description="Polling members to change.")
    ingest: dict[str, Any] | None = Field(None, description="Parsing members to change.")
    recordings: dict[str, Any] | None = Field(
        None, description="Recording bundle members to change."
    )


class ConnectorHealth(BaseModel):
    """How the connector's polling goes, as the worker that runs it last reported."""

    state: str = Field(
        description="starting (no poll finished yet), ok (the last poll succeeded) or error "
        "(it failed: see last_error; retried with backoff).",
        examples=["error"],
    )
    last_success: dt.datetime | None = Field(None, description="End of the last good poll.")
    last_error: str | None = Field(None, description="The last poll's error (no secrets).")
    last_error_kind: str | None = Field(None, examples=["auth", "host_key", "network"])
    consecutive_failures: int = 0
    announced_total: int = Field(
        0, description="Files announced since the reporting worker started the connector."
    )
    worker: str | None = Field(
        None, description="The worker process that runs the connector (host:pid:random)."
    )
    reported_at: dt.datetime | None = Field(
        None,
        description="When that worker reported this. Workers report every 5 s: an older "
        "report means no live worker has reported the connector since (a worker died and its "
        "connectors have not moved yet, or none runs it).",
    )


class ConnectorOut(BaseModel):
    """A connector as the API shows it: secrets masked, never their value."""

    id: str = Field(description="conn_... (API) or cfg_<name> (config file).")
    origin: Literal["api", "config"] = Field(description="config: read-only here.")
    name: str
    type: str = Field(description="Store type: sftp, s3 or local.")
    enabled: bool
    revision: int = Field(description="Grows with every change (config-file connectors: 0).")
    store: dict[str, Any] = Field(
        description="The store's settings (see the store types of the create body); each "
        "secret that holds a value is shown as '**********', never its value.",
        examples=[{"type": "sftp", "host": "sftp.example.com", "password": "**********"}],
    )
    poll: PollConfig
    ingest: ParseSettings
    recordings: RecordingSettings | None = None
    secrets: dict[str, bool] = Field(
        description="Each secret field of the store and whether it holds a value, e.g. "
        "{'store.password': true}."
    )
    public_key: str | None = Field(
        None, description="OpenSSH public key of the generated key pair, for authorized_keys."
    )
    public_key_fingerprint: str | None = Field(None, description="Its SHA256 fingerprint.")
    health: ConnectorHealth | None = Field(
        None,
        description="Polling status (last successful poll, last error) from the runner of the "
        "process that answers; None where it runs no connectors or the connector is not "
        "running (disabled, or started less than a second ago).",
    )
    created_at: dt.datetime | None = None
    created_by: str | None = None
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class StoredConnector:
    """A connector of the table, with its secrets decrypted, as the runner needs it."""

    id: str
    tenant: str
    revision: int
    settings: ConnectorSettings


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


# -- key pairs ----------------------------------------------------------------------------------


def with_generated_key(data: dict[str, Any], member: str, what: str) -> dict[str, Any]:
    """Return ``data`` (a connector to create) with a new Ed25519 private key in
    ``data[member]`` when ``generate_keypair`` is true; that member must be an sftp config
    without a password or key (``ValueError`` naming ``what`` otherwise)."""
    if data.get("generate_keypair") is not True:
        return data
    config = data.get(member)
    if not isinstance(config, dict) or config.get("type") != "sftp":
        raise ValueError(f"generate_keypair is for {what} only")
    if any(config.get(k) for k in ("password", "private_key", "private_key_path")):
        raise ValueError(
            f"generate_keypair: leave {member}.password and {member}.private_key unset"
        )
    return {**data, member: {**config, "private_key": new_private_key()}}


def new_private_key() -> str:
    """Generate an Ed25519 private key in OpenSSH format (unencrypted: it is stored encrypted)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def public_key_line(private_key: str, comment: str) -> str:
    """Return ``ssh-ed25519 AAAA... <comment>`` for an OpenSSH private key."""
    key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{line.decode()} {comment}"


def fingerprint(public_key: str) -> str:
    """Return the SHA256 fingerprint of an OpenSSH public key line, as ssh-keygen -l shows it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# -- reading ------------------------------------------------------------------------------------


def secret_flags(store: BaseModel, prefix: str = "store") -> dict[str, bool]:
    """Each secret field of ``store`` (as ``<prefix>.<field>``) and whether it holds a value."""
    return {
        f"{prefix}.{name}": getattr(store, name) is not None
        for name, info in type(store).model_fields.items()
        if info.annotation is SecretStr or SecretStr in get_args(info.annotation)
    }


def _out(
    settings: ConnectorSettings, *, id: str, origin: Literal["api", "config"], **extra: Any
) -> ConnectorOut:
    public_key = extra.pop("public_key", None)
    return ConnectorOut(
        id=id,
        origin=origin,
        name=settings.name,
        type=settings.store.type,
        enabled=settings.enabled,
        store=settings.store.model_dump(mode="json"),  # SecretStr dumps as the mask
        poll=settings.poll,
        ingest=settings.ingest,
        recordings=settings.recordings,
        secrets=secret_flags(settings.store),
        public_key=public_key,
        public_key_fingerprint=fingerprint(public_key) if public_key else None,
        **extra,
    )


def _masked_settings(row: Any) -> ConnectorSettings:
    """The row's connector with each secret holding the mask (nothing decrypted)."""
    data = {**json.loads(row.config), "name": row.name, "enabled": row.enabled}
    return ConnectorSettings.model_validate(data)


def _row_out(row: Any) -> ConnectorOut:
    return _out(
        _masked_settings(row),
        id=row.id,
        origin="api",
        revision=row.revision,
        public_key=row.public_key,
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        updated_at=_aware(row.updated_at),
        updated_by=row.updated_by,
    )


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def config_connectors(settings: Settings, tenant: str) -> list[ConnectorSettings]:
    """Return the config file's connectors of ``tenant``."""
    return [c for t in settings.tenants if t.id == tenant for c in t.connectors]


def _config_out(conn: ConnectorSettings) -> ConnectorOut:
    return _out(conn, id=CONFIG_PREFIX + conn.name, origin="config", revision=0)


def _config_refused(name: str) -> ConflictError:
    return ConflictError(
        f"connector {name!r} comes from the config file: edit the config file (and restart "
        "callstream) to change it"
    )


async def _row(conn: AsyncConnection, tenant: str, connector_id: str) -> Any:
    row = (
        await conn.execute(
            select(connectors).where(connectors.c.id == connector_id, connectors.c.tenant == tenant)
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no connector {connector_id!r}")
    return row


async def get(
    engine: AsyncEngine, settings: Settings, tenant: str, connector_id: str
) -> ConnectorOut:
    """Return one of ``tenant``'s connectors; :class:`NotFoundError` for anyone else's."""
    async with engine.connect() as conn:
        return await get_in(conn, settings, tenant, connector_id)


async def get_in(
    conn: AsyncConnection, settings: Settings, tenant: str, connector_id: str
) -> ConnectorOut:
    """:func:`get` inside the caller's connection (transaction)."""
    if connector_id.startswith(CONFIG_PREFIX):
        for c in config_connectors(settings, tenant):
            if CONFIG_PREFIX + c.name == connector_id:
                return _config_out(c)
        raise NotFoundError(f"no connector {connector_id!r}")
    return _row_out(await _row(conn, tenant, connector_id))


async def settings_of(
    engine: AsyncEngine, box: SecretBox, settings: Settings, tenant: str, connector_id: str
) -> tuple[ConnectorSettings, bool]:
    """Return one of ``tenant``'s connectors with its secrets, and whether it came from the
    API; :class:`NotFoundError` for anyone else's."""
    if connector_id.startswith(CONFIG_PREFIX):
        for c in config_connectors(settings, tenant):
            if CONFIG_PREFIX + c.name == connector_id:
                return c, False
        raise NotFoundError(f"no connector {connector_id!r}")
    async with engine.connect() as conn:
        return runnable(await _row(conn, tenant, connector_id), box).settings, True


async def parse_settings(engine: AsyncEngine, tenant: str) -> dict[str, ParseSettings]:
    """The ``ingest`` settings of each of ``tenant``'s API connectors, by name (no secret is
    read: a worker that does not run a connector still knows how its files are parsed)."""
    stmt = select(connectors.c.name, connectors.c.config).where(connectors.c.tenant == tenant)
    async with engine.connect() as conn:
        rows = list(await conn.execute(stmt))
    return {
        r.name: ParseSettings.model_validate(json.loads(r.config).get("ingest") or {}) for r in rows
    }


async def list_page(
    engine: AsyncEngine,
    settings: Settings,
    tenant: str,
    after: str | None,
    limit: int,
    origin: str | None = None,
) -> tuple[list[ConnectorOut], bool]:
    """Return ``tenant``'s connectors (config file's and API's, or one ``origin``'s) by name
    after ``after``, and whether more follow."""
    rows: list[tuple[str, ConnectorOut]] = []
    if origin in (None, "api"):
        stmt = select(connectors).where(connectors.c.tenant == tenant)
        if after is not None:
            stmt = stmt.where(connectors.c.name > after)
        stmt = stmt.order_by(connectors.c.name).limit(limit + 1)
        async with engine.connect() as conn:
            rows += [(r.name, _row_out(r)) for r in await conn.execute(stmt)]
    if origin in (None, "config"):
        rows += [
            (c.name, _config_out(c))
            for c in config_connectors(settings, tenant)
            if after is None or c.name > after
        ]
    rows.sort(key=lambda pair: pair[0])
    return [out for _name, out in rows[:limit]], len(rows) > limit


async def stored(
    conn: AsyncConnection, tenant: str | None = None, name: str | None = None
) -> list[Any]:
    """Return rows of the table (every tenant's, one tenant's, or one connector), secrets
    still encrypted."""
    stmt = select(connectors).order_by(connectors.c.tenant, connectors.c.name)
    if tenant is not None:
        stmt = stmt.where(connectors.c.tenant == tenant)
    if name is not None:
        stmt = stmt.where(connectors.c.name == name)
    return list(await conn.execute(stmt))


def runnable(row: Any, box: SecretBox) -> StoredConnector:
    """Decrypt a row into the settings the runner uses (raises SecretsError, ValidationError)."""
    data = {**json.loads(row.config), "name": row.name, "enabled": row.enabled}
    values = box.decrypt(row.secrets) if row.secrets else {}
    settings = ConnectorSettings.model_validate(join_secrets(data, values))
    return StoredConnector(row.id, row.tenant, row.revision, settings)


# -- checks -------------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "ConnectorIn",
        [
            InitErrorDetails(
                type=PydanticCustomError("connector", "{message}", {"message": message}),
                loc=tuple(field.split(".")),
                input=None,
            )
        ],
    )


async def _check(
    conn: AsyncConnection,
    settings: Settings,
    tenant: str,
    candidate: ConnectorSettings,
    own_id: str | None,
) -> None:
    """Apply the cross-checks of the module doc; raise ValidationError (422) or ConflictError."""
    store = candidate.store
    if store.type == "sftp" and store.private_key_path is not None:
        raise _invalid(
            "store.private_key_path",
            "not accepted through the API: send store.private_key, or generate a key pair",
        )
    if store.type == "local":
        allowed = await asyncio.to_thread(local_root_allowed, settings, tenant, store.root)
        if allowed is not None:
            raise _invalid("store.root", f"a local folder must lie inside {allowed}")
    found = size_problems(candidate, settings.kafka.message_max_bytes)
    if found:
        field, _, _rest = found[0].partition(" ")
        raise _invalid(field, found[0])
    if own_id is None and any(
        c.name == candidate.name for c in config_connectors(settings, tenant)
    ):
        raise ConflictError(f"connector name {candidate.name!r} is taken by the config file")
    others: list[tuple[str, str, StoreConfig]] = [
        (t.id, c.name, c.store) for t in settings.tenants for c in t.connectors
    ]
    for row in await conn.execute(select(connectors).where(connectors.c.id != (own_id or ""))):
        others.append((row.tenant, row.name, _masked_settings(row).store))
    for other_tenant, other_name, other_store in others:
        if stores_overlap(store, other_store):
            whose = (
                f"connector {other_name!r}"
                if other_tenant == tenant
                else ("a connector of another tenant")
            )
            raise ConflictError(
                f"connector {candidate.name!r} would watch the same or a nested folder as "
                f"{whose} (store.root {_root(store)!r}): each would announce and clean up the "
                "other's files"
            )


def local_root_allowed(settings: Settings, tenant: str, root: Path) -> str | None:
    """Return the folder a tenant's local stores must lie in, when ``root`` is outside it."""
    allowed = os.path.realpath(settings.data_dir / "local" / tenant)
    try:
        inside = os.path.commonpath([allowed, os.path.realpath(root)]) == allowed
    except ValueError:  # a NUL byte, or a name the file system cannot hold
        inside = False
    return None if inside else allowed


def _root(store: StoreConfig) -> str:
    return str(store.prefix if store.type == "s3" else store.root)


def _flatten(data: Any, path: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{path}.{key}" if path else key))
        return out
    return {path: data}


def changed_paths(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The dotted paths whose values differ between two JSON documents."""
    a, b = _flatten(before), _flatten(after)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# -- writing ------------------------------------------------------------------------------------


def _stored_form(
    settings: ConnectorSettings, box: SecretBox
) -> tuple[str, str | None, dict[str, str]]:
    """Return (config JSON with secrets masked, secrets token or None, the secret values)."""
    data, values = split_secrets(settings)
    for path in values:
        data = join_secrets(data, {path: MASK})
    for key in ("name", "enabled"):
        data.pop(key)
    token = box.encrypt(values) if values else None
    return json.dumps(data, sort_keys=True), token, values


async def create(
    engine: AsyncEngine,
    box: SecretBox,
    settings: Settings,
    tenant: str,
    data: ConnectorIn,
    actor: str,
) -> ConnectorOut:
    """Create an API connector for ``tenant`` (raises ValidationError or ConflictError)."""
    candidate = data.settings()
    config, token, values = _stored_form(candidate, box)
    public_key = None
    if data.generate_keypair:
        public_key = public_key_line(values["store.private_key"], _comment(tenant, data.name))
    now = utcnow()
    row = {
        "id": ID_PREFIX + random.token_hex(8),
        "tenant": tenant,
        "name": candidate.name,
        "type": candidate.store.type,
        "config": config,
        "secrets": token,
        "public_key": public_key,
        "enabled": candidate.enabled,
        "revision": 1,
        "created_at": now,
        "created_by": actor,
        "updated_at": now,
        "updated_by": actor,
    }
    try:
        async with engine.begin() as conn:
            await _check(conn, settings, tenant, candidate, None)
            await conn.execute(connectors.insert().values(**row))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="create",
                resource="connector",
                resource_id=str(row["id"]),
                detail={
                    "name": candidate.name,
                    "type": candidate.store.type,
                    "secrets": sorted(values),
                    "keypair": public_key is not None,
                },
                at=now,
            )
    except IntegrityError as exc:
        raise ConflictError(f"connector name {candidate.name!r} is already used") from exc
    return _row_out(_Row(row))


def _comment(tenant: str, name: str) -> str:
    return f"callstream-{tenant}-{name}"


class _Row:
    """A mapping dressed as a result row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7396) to ``target`` (a copy is returned)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _kept_secrets(patch: dict[str, Any]) -> dict[str, Any]:
    """Drop secrets sent back as the mask: they keep their value."""
    store = patch.get("store")
    if isinstance(store, dict):
        patch = {**patch, "store": {k: v for k, v in store.items() if v != MASK}}
    return patch


async def patch(
    engine: AsyncEngine,
    box: SecretBox,
    settings: Settings,
    tenant: str,
    connector_id: str,
    change: dict[str, Any],
    actor: str,
    *,
    public_key: str | None = None,
) -> ConnectorOut:
    """Apply a merge patch to one of ``tenant``'s API connectors (see the module doc)."""
    if connector_id.startswith(CONFIG_PREFIX):
        await get(engine, settings, tenant, connector_id)  # 404 when it is not the tenant's
        raise _config_refused(connector_id[len(CONFIG_PREFIX) :])
    now = utcnow()
    async with engine.begin() as conn:
        row = await _row(conn, tenant, connector_id)
        current = runnable(row, box).settings
        if change.get("name") not in (None, current.name):
            raise ConflictError(
                f"a connector's name cannot change (it keys the connector's durable state): "
                f"create a new connector instead of renaming {current.name!r}"
            )
        data, secret_values = split_secrets(current)
        before_data = join_secrets(data, secret_values)
        change = _kept_secrets(change)
        store_patch = change.get("store")
        if isinstance(store_patch, dict) and store_patch.get("type", current.store.type) != (
            current.store.type
        ):
            merged = merge_patch(before_data, {**change, "store": None})
            merged["store"] = store_patch
        else:
            merged = merge_patch(before_data, change)
        merged["name"] = current.name
        candidate = ConnectorSettings.model_validate(strict(merged).model_dump())
        config, token, values = _stored_form(candidate, box)
        old_config, _token, old_values = _stored_form(current, box)
        key_changed = values.get("store.private_key") != old_values.get("store.private_key")
        new_public = (
            public_key if public_key is not None else (None if key_changed else row.public_key)
        )
        if (config, values, candidate.enabled, new_public) == (
            old_config,
            old_values,
            current.enabled,
            row.public_key,
        ):
            return _row_out(row)  # nothing changed: no new revision, no restart
        await _check(conn, settings, tenant, candidate, connector_id)
        await conn.execute(
            update(connectors)
            .where(connectors.c.id == connector_id, connectors.c.tenant == tenant)
            .values(
                type=candidate.store.type,
                config=config,
                secrets=token,
                public_key=new_public,
                enabled=candidate.enabled,
                revision=row.revision + 1,
                updated_at=now,
                updated_by=actor,
            )
        )
        changed = changed_paths(json.loads(old_config), json.loads(config))
        changed += [
            p
            for p in sorted(values.keys() | old_values.keys())
            if values.get(p) != old_values.get(p) and p not in changed
        ]
        if candidate.enabled != current.enabled:
            changed.append("enabled")
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="keypair" if public_key is not None else "update",
            resource="connector",
            resource_id=connector_id,
            detail={"name": current.name, "changed": sorted(changed)},
            at=now,
        )
        return _row_out(await _row(conn, tenant, connector_id))


async def generate_keypair(
    engine: AsyncEngine,
    box: SecretBox,
    settings: Settings,
    tenant: str,
    connector_id: str,
    actor: str,
) -> ConnectorOut:
    """Give an SFTP connector a new Ed25519 key pair (replacing its password or key)."""
    current = await get(engine, settings, tenant, connector_id)
    if current.origin == "config":
        raise _config_refused(current.name)
    if current.type != "sftp":
        raise ConflictError(f"connector {current.name!r} is not an sftp connector")
    private_key = new_private_key()
    change = {
        "store": {
            "password": None,
            "private_key": private_key,
            "private_key_path": None,
            "private_key_passphrase": None,
        }
    }
    line = public_key_line(private_key, _comment(tenant, current.name))
    return await patch(engine, box, settings, tenant, connector_id, change, actor, public_key=line)


async def remove(
    engine: AsyncEngine, settings: Settings, tenant: str, connector_id: str, actor: str
) -> None:
    """Delete one of ``tenant``'s API connectors (its durable file state stays)."""
    if connector_id.startswith(CONFIG_PREFIX):
        await get(engine, settings, tenant, connector_id)
        raise _config_refused(connector_id[len(CONFIG_PREFIX) :])
    async with engine.begin() as conn:
        row = await _row(conn, tenant, connector_id)
        await conn.execute(
            delete(connectors).where(connectors.c.id == connector_id, connectors.c.tenant == tenant)
        )
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="delete",
            resource="connector",
            resource_id=connector_id,
            detail={"name": row.name},
        )


async def re_encrypt(engine: AsyncEngine, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the first key; return how many connectors."""
    async with engine.begin() as conn:
        rows = list(
            await conn.execute(
                select(connectors.c.id, connectors.c.secrets).where(
                    connectors.c.secrets.is_not(None)
                )
            )
        )
        params: Sequence[dict[str, Any]] = [
            {"row_id": r.id, "token": box.rotate(r.secrets)} for r in rows
        ]
        if params:
            await conn.execute(
                update(connectors)
                .where(connectors.c.id == bindparam("row_id"))
                .values(secrets=bindparam("token")),
                list(params),
            )
    return len(rows)
