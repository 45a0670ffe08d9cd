"""Export connectors of a tenant: where export jobs deliver reports (SFTP, S3, e-mail).

An export connector is ``{name, enabled, config}``; ``config.type`` picks the model:

- ``sftp``: :class:`connectors.sftp.SftpConfig` (``root`` is the remote folder files are
  written to; host key pinned; password or private key, or ``generate_keypair``);
- ``s3``: :class:`connectors.s3.S3Config` (files are written under ``prefix``);
- ``email``: :class:`EmailConfig`, 1 to 20 addresses that get one mail of download links per
  export (never an attachment) through the operator's relay (settings ``mail:``).

The rules of import connectors made through the API hold: ``config.private_key_path`` is
refused (a tenant does not name files on our servers); there is no ``local`` type; every
connection goes through the SSRF guard of ``api.connect_allow`` (at test and delivery time).

Storage (table ``export_connectors``), as for import connectors
(:mod:`streams.control.connectors`): the configuration as JSON with every secret replaced by
the mask, the secrets in one Fernet token (:mod:`streams.control.secrets`); responses show the
mask and never decrypt. ``revision`` grows with each change; updates are JSON merge patches
(a secret sent back as the mask keeps its value, a different ``config.type`` replaces the
whole config); ``name`` is unique per tenant and may change. Every change is audited
(``resource = "export_connector"``) in its own transaction, never with a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets as random
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
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

from connectors.s3 import S3Config
from connectors.sftp import SftpConfig
from streams.control import audit
from streams.control.connectors import (
    MASK,
    changed_paths,
    fingerprint,
    flat_store_errors,
    merge_patch,
    public_key_line,
    secret_flags,
    with_generated_key,
)
from streams.control.errors import ConflictError, NotFoundError
from streams.control.listing import utc
from streams.control.secrets import SecretBox, join_secrets, split_secrets
from streams.db import metadata
from streams.settings import Slug

ID_PREFIX = "exp_"
MAX_ADDRESSES = 20

export_connectors = Table(
    "export_connectors",
    metadata,
    Column("id", String(32), primary_key=True),  # exp_<16 hex>
    Column("tenant", String(64), nullable=False),
    Column("name", String(63), nullable=False),
    Column("type", String(16), nullable=False),  # sftp, s3, email
    Column("config", Text, nullable=False),  # JSON, secrets masked
    Column("secrets", Text),  # Fernet token of {field path: value}; NULL: no secret
    Column("public_key", String(200)),  # OpenSSH line of a generated key pair
    Column("enabled", Boolean, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(100), nullable=False),
    UniqueConstraint("tenant", "name", name="uq_export_connectors_tenant_name"),
)


class EmailConfig(BaseModel):
    """Mail the download links of each export to these addresses (the relay: ``mail:``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["email"] = "email"
    to: list[EmailStr] = Field(
        min_length=1,
        max_length=MAX_ADDRESSES,
        description=f"1 to {MAX_ADDRESSES} recipient addresses (duplicates are dropped).",
        examples=[["quality@acme.example", "ops@acme.example"]],
    )

    @field_validator("to")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for address in value:
            if address.lower() not in seen:
                seen.add(address.lower())
                out.append(address)
        return out


DestinationConfig = Annotated[SftpConfig | S3Config | EmailConfig, Field(discriminator="type")]
"""Every export connector type's config model, told apart by ``type``."""


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "ExportConnectorIn",
        [
            InitErrorDetails(
                type=PydanticCustomError("export_connector", "{message}", {"message": message}),
                loc=tuple(field.split(".")),
                input=None,
            )
        ],
    )


class ExportConnectorSettings(BaseModel):
    """An export connector as it is stored and run (secrets included)."""

    model_config = ConfigDict(extra="forbid")

    name: Slug = Field(description="Unique within the tenant.", examples=["quality-sftp"])
    enabled: bool = Field(True, description="Disabled export connectors receive nothing.")
    config: DestinationConfig = Field(
        description="Where reports go: type sftp (remote folder 'root'), s3 (bucket and "
        "prefix) or email (addresses 'to')."
    )

    @field_validator("config", mode="wrap")
    @classmethod
    def _config(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return flat_store_errors(value, handler)


def check(config: SftpConfig | S3Config | EmailConfig) -> None:
    """Apply the API's rule on top of the models: no ``private_key_path`` (ValidationError)."""
    if isinstance(config, SftpConfig) and config.private_key_path is not None:
        raise _invalid(
            "config.private_key_path",
            "not accepted through the API: send config.private_key, or generate_keypair",
        )


def strict(data: dict[str, Any]) -> ExportConnectorSettings:
    """Validate JSON data taking JSON's types as they are ("5" is no integer, false no
    number), as the API documents them."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):  # not JSON data: the lenient validation names the problem
        return ExportConnectorSettings.model_validate(data)
    return ExportConnectorSettings.model_validate_json(text, strict=True)


class ExportConnectorIn(ExportConnectorSettings):
    """An export connector to create."""

    generate_keypair: bool = Field(
        False,
        description="sftp only, with no password or private key given: generate an Ed25519 "
        "key pair; the response shows the public key for the server's authorized_keys.",
    )

    @model_validator(mode="before")
    @classmethod
    def _keypair_and_json_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = with_generated_key(data, "config", "sftp export connectors")
        strict({k: v for k, v in data.items() if k != "generate_keypair"})
        return data

    def settings(self) -> ExportConnectorSettings:
        """The export connector without the creation options."""
        return ExportConnectorSettings.model_validate(self.model_dump(exclude={"generate_keypair"}))


class ExportConnectorPatch(BaseModel):
    """A JSON merge patch of an export connector: only the members to change."""

    model_config = ConfigDict(extra="forbid")

    name: Slug | None = Field(None, description="A new name (unique within the tenant).")
    enabled: bool | None = Field(None, description="false: exports skip this connector.")
    config: dict[str, Any] | None = Field(
        None,
        description="Config members to change; secrets omitted or sent as the mask are kept; "
        "null removes a member; a different type replaces the whole config.",
        examples=[{"password": "new secret"}, {"to": ["ops@acme.example"]}],
    )


class ExportConnectorOut(BaseModel):
    """An export connector as the API shows it: secrets masked, never their value."""

    id: str = Field(description="exp_<16 hex>.", examples=["exp_3f2a9c0d1e4b5a69"])
    name: str
    type: Literal["sftp", "s3", "email"]
    enabled: bool
    revision: int = Field(description="Grows with every change.")
    config: dict[str, Any] = Field(
        description="The settings of the type; each secret that holds a value is shown as "
        "'**********', never its value.",
        examples=[{"type": "sftp", "host": "sftp.example.com", "password": "**********"}],
    )
    secrets: dict[str, bool] = Field(
        description="Each secret field and whether it holds a value, e.g. "
        "{'config.password': true}."
    )
    public_key: str | None = Field(
        None, description="OpenSSH public key of the generated key pair, for authorized_keys."
    )
    public_key_fingerprint: str | None = Field(None, description="Its SHA256 fingerprint.")
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class Destination:
    """An export connector with its secrets decrypted, as an export run delivers to it."""

    id: str
    tenant: str
    name: str
    enabled: bool
    revision: int
    config: SftpConfig | S3Config | EmailConfig

    @property
    def type(self) -> Literal["sftp", "s3", "email"]:
        """The connector type."""
        return self.config.type


# -- reading ------------------------------------------------------------------------------------


def _masked(row: Any) -> ExportConnectorSettings:
    """The row's connector with each secret holding the mask (nothing decrypted)."""
    data = {"name": row.name, "enabled": row.enabled, "config": json.loads(row.config)}
    return ExportConnectorSettings.model_validate(data)


def _out(row: Any) -> ExportConnectorOut:
    settings = _masked(row)
    return ExportConnectorOut(
        id=row.id,
        name=row.name,
        type=settings.config.type,
        enabled=row.enabled,
        revision=row.revision,
        config=settings.config.model_dump(mode="json"),  # SecretStr dumps as the mask
        secrets=secret_flags(settings.config, "config"),
        public_key=row.public_key,
        public_key_fingerprint=fingerprint(row.public_key) if row.public_key else None,
        created_at=utc(row.created_at),
        created_by=row.created_by,
        updated_at=utc(row.updated_at),
        updated_by=row.updated_by,
    )


def _decrypted(row: Any, box: SecretBox) -> ExportConnectorSettings:
    data = {"name": row.name, "enabled": row.enabled, "config": json.loads(row.config)}
    values = box.decrypt(row.secrets) if row.secrets else {}
    return ExportConnectorSettings.model_validate(join_secrets(data, values))


async def _row(conn: AsyncConnection, tenant: str, connector_id: str) -> Any:
    row = (
        await conn.execute(
            select(export_connectors).where(
                export_connectors.c.id == connector_id, export_connectors.c.tenant == tenant
            )
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no export connector {connector_id!r}")
    return row


async def exists(conn: AsyncConnection, tenant: str, connector_id: str) -> bool:
    """Tell whether ``tenant`` has the export connector ``connector_id`` (any state)."""
    found = await conn.execute(
        select(export_connectors.c.id).where(
            export_connectors.c.id == connector_id, export_connectors.c.tenant == tenant
        )
    )
    return found.first() is not None


async def get(engine: AsyncEngine, tenant: str, connector_id: str) -> ExportConnectorOut:
    """Return one of ``tenant``'s export connectors; :class:`NotFoundError` for anyone else's."""
    async with engine.connect() as conn:
        return _out(await _row(conn, tenant, connector_id))


async def get_destination(
    engine: AsyncEngine, box: SecretBox, tenant: str, connector_id: str
) -> Destination:
    """Return one of ``tenant``'s export connectors with its secrets, for a delivery;
    :class:`NotFoundError` for anyone else's (or a deleted one). Raises
    :class:`~streams.control.secrets.SecretsError` when no key decrypts its secrets."""
    async with engine.connect() as conn:
        row = await _row(conn, tenant, connector_id)
    settings = _decrypted(row, box)
    return Destination(row.id, row.tenant, row.name, row.enabled, row.revision, settings.config)


async def list_page(
    engine: AsyncEngine, tenant: str, after: str | None, limit: int
) -> tuple[list[ExportConnectorOut], bool]:
    """Return ``tenant``'s export connectors by name after ``after``, and whether more follow."""
    stmt = select(export_connectors).where(export_connectors.c.tenant == tenant)
    if after is not None:
        stmt = stmt.where(export_connectors.c.name > after)
    stmt = stmt.order_by(export_connectors.c.name).limit(limit + 1)
    async with engine.connect() as conn:
        rows = list(await conn.execute(stmt))
    return [_out(r) for r in rows[:limit]], len(rows) > limit


# -- writing ------------------------------------------------------------------------------------


def _stored_form(
    settings: ExportConnectorSettings, box: SecretBox
) -> tuple[str, str | None, dict[str, str]]:
    """Return (config JSON with secrets masked, secrets token or None, the secret values)."""
    data, values = split_secrets(settings)
    for path in values:
        data = join_secrets(data, {path: MASK})
    token = box.encrypt(values) if values else None
    return json.dumps(data["config"], sort_keys=True), token, values


def _name_taken(name: str) -> ConflictError:
    return ConflictError(f"export connector name {name!r} is already used")


async def create(
    engine: AsyncEngine,
    box: SecretBox,
    tenant: str,
    data: ExportConnectorIn,
    actor: str,
    now: dt.datetime,
) -> ExportConnectorOut:
    """Create an export connector for ``tenant`` (ConflictError when the name is taken)."""
    candidate = data.settings()
    check(candidate.config)
    config, token, values = _stored_form(candidate, box)
    public_key = None
    if data.generate_keypair:
        comment = f"callstream-{tenant}-export-{candidate.name}"
        public_key = public_key_line(values["config.private_key"], comment)
    row = {
        "id": ID_PREFIX + random.token_hex(8),
        "tenant": tenant,
        "name": candidate.name,
        "type": candidate.config.type,
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
            await conn.execute(export_connectors.insert().values(**row))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="create",
                resource="export_connector",
                resource_id=str(row["id"]),
                detail={
                    "name": candidate.name,
                    "type": candidate.config.type,
                    "secrets": sorted(values),
                    "keypair": public_key is not None,
                },
                at=now,
            )
    except IntegrityError as exc:
        raise _name_taken(candidate.name) from exc
    async with engine.connect() as conn:
        return _out(await _row(conn, tenant, str(row["id"])))


def _kept_secrets(change: dict[str, Any]) -> dict[str, Any]:
    """Drop secrets sent back as the mask: they keep their value."""
    config = change.get("config")
    if isinstance(config, dict):
        change = {**change, "config": {k: v for k, v in config.items() if v != MASK}}
    return change


async def patch(
    engine: AsyncEngine,
    box: SecretBox,
    tenant: str,
    connector_id: str,
    change: dict[str, Any],
    actor: str,
    now: dt.datetime,
) -> ExportConnectorOut:
    """Apply a JSON merge patch to one of ``tenant``'s export connectors (module doc);
    raises ValidationError (422), NotFoundError or ConflictError (name taken)."""
    try:
        async with engine.begin() as conn:
            row = await _row(conn, tenant, connector_id)
            current = _decrypted(row, box)
            data, secret_values = split_secrets(current)
            before = join_secrets(data, secret_values)
            change = _kept_secrets(change)
            config_patch = change.get("config")
            if isinstance(config_patch, dict) and config_patch.get("type", current.config.type) != (
                current.config.type
            ):
                merged = merge_patch(before, {**change, "config": None})
                merged["config"] = config_patch
            else:
                merged = merge_patch(before, change)
            candidate = ExportConnectorSettings.model_validate_json(json.dumps(merged), strict=True)
            check(candidate.config)
            config, token, values = _stored_form(candidate, box)
            key_changed = values.get("config.private_key") != secret_values.get(
                "config.private_key"
            )
            public_key = None if key_changed else row.public_key
            same = (config, values, candidate.enabled, candidate.name) == (
                row.config,
                secret_values,
                row.enabled,
                row.name,
            )
            if same:
                return _out(row)  # nothing changed: no new revision
            await conn.execute(
                update(export_connectors)
                .where(export_connectors.c.id == connector_id, export_connectors.c.tenant == tenant)
                .values(
                    name=candidate.name,
                    type=candidate.config.type,
                    config=config,
                    secrets=token,
                    public_key=public_key,
                    enabled=candidate.enabled,
                    revision=row.revision + 1,
                    updated_at=now,
                    updated_by=actor,
                )
            )
            changed = changed_paths(
                {"config": json.loads(row.config)}, {"config": json.loads(config)}
            )
            changed += [
                p
                for p in sorted(values.keys() | secret_values.keys())
                if values.get(p) != secret_values.get(p) and p not in changed
            ]
            changed += [k for k in ("name", "enabled") if getattr(candidate, k) != getattr(row, k)]
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="update",
                resource="export_connector",
                resource_id=connector_id,
                detail={"name": candidate.name, "changed": sorted(changed)},
                at=now,
            )
            return _out(await _row(conn, tenant, connector_id))
    except IntegrityError as exc:
        raise _name_taken(str(change.get("name"))) from exc


async def remove(
    engine: AsyncEngine, tenant: str, connector_id: str, actor: str, now: dt.datetime
) -> None:
    """Delete one of ``tenant``'s export connectors."""
    async with engine.begin() as conn:
        row = await _row(conn, tenant, connector_id)
        await conn.execute(
            delete(export_connectors).where(
                export_connectors.c.id == connector_id, export_connectors.c.tenant == tenant
            )
        )
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="delete",
            resource="export_connector",
            resource_id=connector_id,
            detail={"name": row.name},
            at=now,
        )


async def re_encrypt(engine: AsyncEngine, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the first key; return how many export connectors."""
    async with engine.begin() as conn:
        rows = list(
            await conn.execute(
                select(export_connectors.c.id, export_connectors.c.secrets).where(
                    export_connectors.c.secrets.is_not(None)
                )
            )
        )
        if rows:
            await conn.execute(
                update(export_connectors)
                .where(export_connectors.c.id == bindparam("row_id"))
                .values(secrets=bindparam("token")),
                [{"row_id": r.id, "token": box.rotate(r.secrets)} for r in rows],
            )
    return len(rows)
