"""Drop-box accounts: who may log in to the hosted SFTP drop box, and where they land.

An account belongs to one tenant and is tied to one of that tenant's ``local`` import connectors:
its SFTP folder *is* that connector's store root, so an upload follows the same file-arrival
path as any other file of the connector (see :mod:`streams.dropbox.server`). Several accounts
may share a connector; an account never sees anything outside its connector's folder.

- **Credentials**: a password (kept only as a salted scrypt hash, checked in constant time)
  and/or OpenSSH public keys. Neither is ever returned: responses say ``has_password`` and list
  the public keys (public by nature).
- **allow_from**: the addresses (CIDR blocks) the account may log in from; at least one
  (``0.0.0.0/0`` and ``::/0`` allow any).
- **layout** (where uploads may go, the seeds' folder rules): ``data`` (seed 003: files only,
  directly in ``data/``; no folder may be made), ``sources`` (seed 002: files in
  ``<sources folder>/<type>/``, the connector's ``ingest.sources_folder``; only the type folders
  may be made) or ``any`` (anywhere but the connector's processed, invalid and archive folders).
  Those folders are readable by the account (the customer sees what happened to a file), never
  writable.
- **Quotas**: ``workspace_quota_bytes`` (bytes in the folder) and ``daily_quota_bytes`` (bytes
  uploaded per UTC day, kept in ``dropbox_usage`` so a restart does not reset it); unset: the
  ``dropbox`` settings' defaults.

Usernames are unique across tenants (an SSH login names no tenant).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
from typing import Any, Literal, Self

import asyncssh
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from connectors.local import LocalConfig
from streams.control import audit
from streams.control import connectors as connector_ops
from streams.control.errors import ConflictError, NotFoundError
from streams.control.listing import utc
from streams.control.secrets import SecretBox
from streams.control.tenants import get as get_tenant
from streams.db import dialect_insert, metadata
from streams.settings import ConnectorSettings, Settings

ID_PREFIX = "dbx_"
MAX_KEYS = 20
Layout = Literal["data", "sources", "any"]

dropbox_accounts = Table(
    "dropbox_accounts",
    metadata,
    Column("id", String(32), primary_key=True),  # dbx_<16 hex>
    Column("tenant", String(64), nullable=False, index=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("connector_id", String(70), nullable=False),
    Column("password_hash", String(200)),  # scrypt$n$r$p$salt$hash; NULL: keys only
    Column("public_keys", Text, nullable=False),  # JSON list of OpenSSH lines
    Column("allow_from", Text, nullable=False),  # JSON list of CIDR blocks
    Column("layout", String(16), nullable=False),
    Column("workspace_quota_bytes", BigInteger),  # NULL: dropbox.workspace_quota_bytes
    Column("daily_quota_bytes", BigInteger),  # NULL: dropbox.daily_quota_bytes
    Column("enabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(100), nullable=False),
)

dropbox_usage = Table(
    "dropbox_usage",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("day", Date, primary_key=True),  # UTC
    Column("bytes", BigInteger, nullable=False),
)

# -- passwords ------------------------------------------------------------------------------

_SCRYPT = (2**14, 8, 1)  # ~16 MiB and tens of milliseconds per guess


def hash_password(password: str) -> str:
    """Return the stored form of a password: salted scrypt."""
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


_DUMMY_HASH = hash_password(secrets.token_hex(16))


def check_password(password: str, stored: str | None) -> bool:
    """Tell whether ``password`` matches ``stored`` (constant time; a missing hash costs the
    same work and fails, so timing does not tell which accounts exist)."""
    try:
        _scheme, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected) and stored is not None


# -- models ---------------------------------------------------------------------------------


def _public_key(line: str) -> str:
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise ValueError("not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')") from None
    return key.export_public_key("openssh").decode().strip()


def _networks(value: list[str]) -> list[str]:
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR block") from exc
    return out


class _Fields(BaseModel):
    """Fields an account is created or changed with."""

    model_config = ConfigDict(extra="forbid")

    public_keys: list[str] | None = Field(
        None,
        max_length=MAX_KEYS,
        description="OpenSSH public key lines that may log in.",
        examples=[["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... uploader@crm"]],
    )
    allow_from: list[str] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="CIDR blocks (or single addresses) the account may log in from; "
        "0.0.0.0/0 and ::/0 allow any.",
        examples=[["203.0.113.0/24"]],
    )
    layout: Layout | None = Field(
        None,
        description="Where uploads may go: data (files in data/, no folders), sources "
        "(files in sources/<type>/, only type folders may be made) or any.",
    )
    workspace_quota_bytes: int | None = Field(
        None, ge=1, le=2**53, description="Most bytes in the folder (unset: the default)."
    )
    daily_quota_bytes: int | None = Field(
        None, ge=1, le=2**53, description="Most bytes uploaded per UTC day (unset: the default)."
    )
    enabled: bool | None = Field(None, description="false: the account cannot log in.")

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_public_key(k) for k in value]

    @field_validator("allow_from")
    @classmethod
    def _allow(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _networks(value)


class DropboxAccountIn(_Fields):
    """A drop-box account to create."""

    username: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$",
        description="SFTP login name, unique across all tenants.",
        examples=["acme-crm"],
    )
    connector_id: str = Field(
        max_length=70,
        description="The tenant's local import connector whose folder the account uploads to.",
        examples=["conn_0123456789abcdef"],
    )
    password: SecretStr | None = Field(
        None, min_length=12, max_length=200, description="Login password (never returned)."
    )
    allow_from: list[str] = Field(
        min_length=1,
        max_length=100,
        description="CIDR blocks (or single addresses) the account may log in from; "
        "0.0.0.0/0 and ::/0 allow any.",
        examples=[["203.0.113.0/24"]],
    )
    layout: Layout = Field(
        "data",
        description="Where uploads may go: data (files in data/, no folders), sources "
        "(files in sources/<type>/, only type folders may be made) or any.",
    )
    enabled: bool = Field(True, description="false: the account cannot log in.")

    @model_validator(mode="after")
    def _credential(self) -> Self:
        if self.password is None and not self.public_keys:
            raise ValueError("give a password, public_keys, or both")
        return self


class DropboxAccountPatch(_Fields):
    """Members to change; an omitted member keeps its value."""

    password: SecretStr | None = Field(
        None,
        min_length=12,
        max_length=200,
        description="A new password; null removes it (public keys must remain).",
    )


class DropboxAccount(BaseModel):
    """A drop-box account as shown: never its password."""

    id: str = Field(description="dbx_<16 hex>.")
    username: str
    connector_id: str
    has_password: bool
    public_keys: list[str]
    allow_from: list[str]
    layout: Layout
    workspace_quota_bytes: int = Field(description="In effect (the default when not set).")
    daily_quota_bytes: int = Field(description="In effect (the default when not set).")
    uploaded_today_bytes: int = Field(description="Bytes uploaded since 00:00 UTC.")
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class DropboxAccountList(BaseModel):
    """A tenant's drop-box accounts by username."""

    items: list[DropboxAccount]


# -- operations -----------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "DropboxAccountIn",
        [
            InitErrorDetails(
                type=PydanticCustomError("dropbox", "{message}", {"message": message}),
                loc=(field,),
                input=None,
            )
        ],
    )


async def local_connector(
    engine: AsyncEngine, box: SecretBox, settings: Settings, tenant: str, connector_id: str
) -> ConnectorSettings:
    """Return the tenant's connector an account uploads to; ValidationError when it is not a
    local one, :class:`NotFoundError` when the tenant has no such connector."""
    try:
        found, _from_api = await connector_ops.settings_of(
            engine, box, settings, tenant, connector_id
        )
    except NotFoundError:  # without the id: it may be another tenant's
        raise NotFoundError("connector_id: the tenant has no such connector") from None
    if not isinstance(found.store, LocalConfig):
        raise _invalid("connector_id", f"connector {connector_id!r} is not a local-folder one")
    return found


def _out(row: Any, settings: Settings, today_bytes: int) -> DropboxAccount:
    return DropboxAccount(
        id=row.id,
        username=row.username,
        connector_id=row.connector_id,
        has_password=row.password_hash is not None,
        public_keys=json.loads(row.public_keys),
        allow_from=json.loads(row.allow_from),
        layout=row.layout,
        workspace_quota_bytes=row.workspace_quota_bytes or settings.dropbox.workspace_quota_bytes,
        daily_quota_bytes=row.daily_quota_bytes or settings.dropbox.daily_quota_bytes,
        uploaded_today_bytes=today_bytes,
        enabled=row.enabled,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


async def _row(conn: AsyncConnection, tenant: str, account_id: str) -> Any:
    row = (
        await conn.execute(
            select(dropbox_accounts).where(
                dropbox_accounts.c.id == account_id, dropbox_accounts.c.tenant == tenant
            )
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no drop-box account {account_id[:40]!r}")
    return row


async def uploaded_on(conn: AsyncConnection, account_id: str, day: dt.date) -> int:
    """Return the bytes an account uploaded on a UTC day."""
    value = await conn.scalar(
        select(dropbox_usage.c.bytes).where(
            dropbox_usage.c.account_id == account_id, dropbox_usage.c.day == day
        )
    )
    return int(value or 0)


async def add_upload(engine: AsyncEngine, account_id: str, day: dt.date, n: int) -> None:
    """Add ``n`` uploaded bytes to an account's total of a UTC day (durably)."""
    if n <= 0:
        return
    insert = dialect_insert(engine, dropbox_usage).values(account_id=account_id, day=day, bytes=n)
    stmt = insert.on_conflict_do_update(
        index_elements=["account_id", "day"],
        set_={"bytes": dropbox_usage.c.bytes + insert.excluded.bytes},
    )
    async with engine.begin() as conn:
        await conn.execute(stmt)


async def create(
    engine: AsyncEngine,
    box: SecretBox,
    settings: Settings,
    tenant: str,
    data: DropboxAccountIn,
    actor: str,
) -> DropboxAccount:
    """Create an account (ValidationError: not a local connector; NotFoundError: no such
    connector; ConflictError: the username is taken)."""
    await local_connector(engine, box, settings, tenant, data.connector_id)
    now = utcnow()
    password = data.password.get_secret_value() if data.password is not None else None
    values = {
        "id": ID_PREFIX + secrets.token_hex(8),
        "tenant": tenant,
        "username": data.username,
        "connector_id": data.connector_id,
        "password_hash": hash_password(password) if password is not None else None,
        "public_keys": json.dumps(data.public_keys or []),
        "allow_from": json.dumps(data.allow_from),
        "layout": data.layout,
        "workspace_quota_bytes": data.workspace_quota_bytes,
        "daily_quota_bytes": data.daily_quota_bytes,
        "enabled": data.enabled,
        "created_at": now,
        "created_by": actor,
        "updated_at": now,
        "updated_by": actor,
    }
    try:
        async with engine.begin() as conn:
            await get_tenant(conn, tenant)
            await conn.execute(dropbox_accounts.insert().values(**values))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="create",
                resource="dropbox_account",
                resource_id=str(values["id"]),
                detail={"username": data.username, "connector_id": data.connector_id},
                at=now,
            )
            row = await _row(conn, tenant, str(values["id"]))
    except IntegrityError:
        raise ConflictError(f"the username {data.username!r} is taken") from None
    return _out(row, settings, 0)


async def get(
    conn: AsyncConnection, settings: Settings, tenant: str, account_id: str
) -> DropboxAccount:
    """Return one of the tenant's accounts; :class:`NotFoundError` for anyone else's."""
    row = await _row(conn, tenant, account_id)
    return _out(row, settings, await uploaded_on(conn, row.id, utcnow().date()))


async def list_accounts(
    conn: AsyncConnection, settings: Settings, tenant: str
) -> list[DropboxAccount]:
    """Return the tenant's accounts by username."""
    rows = await conn.execute(
        select(dropbox_accounts)
        .where(dropbox_accounts.c.tenant == tenant)
        .order_by(dropbox_accounts.c.username)
    )
    today = utcnow().date()
    return [_out(r, settings, await uploaded_on(conn, r.id, today)) for r in rows]


async def patch(
    engine: AsyncEngine,
    settings: Settings,
    tenant: str,
    account_id: str,
    data: DropboxAccountPatch,
    actor: str,
) -> DropboxAccount:
    """Change an account's members that ``data`` sets (ValidationError: it would be left
    with no credential)."""
    given = data.model_fields_set
    changes: dict[str, Any] = {}
    if "password" in given:
        secret = data.password.get_secret_value() if data.password is not None else None
        changes["password_hash"] = hash_password(secret) if secret is not None else None
    for name in ("public_keys", "allow_from"):
        if name in given:
            value = getattr(data, name)
            if value is None and name == "allow_from":
                raise _invalid(name, "an account needs at least one allowed address")
            changes[name] = json.dumps(value or [])
    for name in ("layout", "enabled"):
        if name in given:
            if getattr(data, name) is None:
                raise _invalid(name, "cannot be null")
            changes[name] = getattr(data, name)
    for name in ("workspace_quota_bytes", "daily_quota_bytes"):
        if name in given:
            changes[name] = getattr(data, name)
    now = utcnow()
    async with engine.begin() as conn:
        row = await _row(conn, tenant, account_id)
        password = changes.get("password_hash", row.password_hash)
        keys = json.loads(changes.get("public_keys", row.public_keys))
        if password is None and not keys:
            raise _invalid("password", "the account would have neither a password nor a key")
        await conn.execute(
            update(dropbox_accounts)
            .where(dropbox_accounts.c.id == row.id)
            .values(**changes, updated_at=now, updated_by=actor)
        )
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="update",
            resource="dropbox_account",
            resource_id=row.id,
            detail={"changed": sorted(given)},
            at=now,
        )
        return await get(conn, settings, tenant, account_id)


async def remove(engine: AsyncEngine, tenant: str, account_id: str, actor: str) -> None:
    """Delete an account (its files stay in the connector's folder)."""
    async with engine.begin() as conn:
        row = await _row(conn, tenant, account_id)
        await conn.execute(delete(dropbox_accounts).where(dropbox_accounts.c.id == row.id))
        await conn.execute(delete(dropbox_usage).where(dropbox_usage.c.account_id == row.id))
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="delete",
            resource="dropbox_account",
            resource_id=row.id,
            detail={"username": row.username},
            at=utcnow(),
        )


async def by_username(conn: AsyncConnection, username: str) -> Any:
    """Return the account row of a login name, or None."""
    return (
        await conn.execute(select(dropbox_accounts).where(dropbox_accounts.c.username == username))
    ).first()
