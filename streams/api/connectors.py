"""Import connectors of the caller's tenant: CRUD and SFTP key pairs (rules in
:mod:`streams.control.connectors`). The runner applies every change within a second."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from pydantic import Field, ValidationError

from connectors.local import LocalConfig
from connectors.probe import ProbeReport, probe
from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import FieldError, Unprocessable, field_errors
from streams.api.routing import ApiRoutes, Call
from streams.connector_health import read_reports
from streams.control import connectors
from streams.control.connectors import ConnectorHealth, ConnectorIn, ConnectorOut, ConnectorPatch
from streams.control.secrets import SecretBox
from streams.runner import guard_for
from streams.settings import StoreConfig

routes = ApiRoutes(
    "connectors",
    "Import connectors (sftp, s3, local) of the caller's tenant. Connectors of the config file "
    "are listed read-only (origin 'config'). Secrets are write-only: responses mask them.",
)

ERRORS = (404, 409)


class ConnectorQuery(PageQuery):
    """Paging of the connector list (ordered by name)."""

    origin: str | None = Field(
        None, pattern="^(api|config)$", description="Only connectors of this origin."
    )


def _box(call: Call) -> SecretBox:
    box = call.ctx.secrets
    if box is None:
        raise RuntimeError("the API context has no secret box (ApiContext.secrets)")
    return box


def _invalid(exc: ValidationError) -> Unprocessable:
    return Unprocessable("invalid connector", field_errors(exc))


@routes.post(
    "/v1/connectors",
    summary="Create a connector",
    body=ConnectorIn,
    response=ConnectorOut,
    status=201,
    errors=(409,),
    description="Validated like a connector of the config file; 409 when the name is taken or "
    "its folder overlaps another connector's. With generate_keypair (sftp), the response "
    "holds the public key to install in the server's authorized_keys.",
)
async def create_connector(call: Call) -> ConnectorOut:
    """Create a connector; the runner starts it within a second."""
    try:
        return await connectors.create(
            call.ctx.engine, _box(call), call.ctx.settings, call.tenant, call.body, _actor(call)
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc


@routes.get(
    "/v1/connectors",
    summary="List connectors",
    query=ConnectorQuery,
    response=Page[ConnectorOut],
)
async def list_connectors(call: Call) -> Page[ConnectorOut]:
    """List the tenant's connectors (API and config file) by name."""
    after = decode_cursor(call.query.cursor, 1)
    limit = min(call.query.limit, call.ctx.settings.api.max_page_size)
    items, more = await connectors.list_page(
        call.ctx.engine,
        call.ctx.settings,
        call.tenant,
        str(after[0]) if after else None,
        limit,
        call.query.origin,
    )
    cursor = encode_cursor([items[-1].name]) if more and items else None
    return Page[ConnectorOut](items=await _with_health(call, items), next_cursor=cursor)


async def _with_health(call: Call, outs: list[ConnectorOut]) -> list[ConnectorOut]:
    """``outs`` with their polling status: this process's own when it runs the connector, else
    the last report of the worker that runs it (:mod:`streams.connector_health`), else none. A
    disabled connector has none (its last report is from before it was disabled)."""
    runner = call.ctx.runner
    local = {} if runner is None else runner.contexts
    elsewhere = [o.name for o in outs if o.enabled and (call.tenant, o.name) not in local]
    reports = await read_reports(call.ctx.engine, call.tenant, elsewhere)
    now = dt.datetime.now(dt.UTC)
    done = []
    for out in outs:
        running = local.get((call.tenant, out.name))
        if running is not None and runner is not None:
            fields = {**dataclasses.asdict(running.status), "worker": runner.worker}
            health = ConnectorHealth.model_validate({**fields, "reported_at": now})
        elif out.enabled and out.name in reports:
            health = ConnectorHealth.model_validate(reports[out.name])
        else:
            done.append(out)
            continue
        done.append(out.model_copy(update={"health": health}))
    return done


@routes.get("/v1/connectors/{id}", summary="Get a connector", response=ConnectorOut, errors=(404,))
async def get_connector(call: Call) -> ConnectorOut:
    """Return one connector, secrets masked, with its polling status."""
    found = await connectors.get(call.ctx.engine, call.ctx.settings, call.tenant, call.params["id"])
    [found] = await _with_health(call, [found])
    return found


@routes.patch(
    "/v1/connectors/{id}",
    summary="Change a connector (JSON merge patch)",
    body=ConnectorPatch,
    response=ConnectorOut,
    errors=ERRORS,
    description="Members sent replace the current ones, null resets one to its default, "
    "omitted members and secrets sent back as '**********' keep their value; a different "
    "store.type replaces the whole store. The name cannot change. The runner restarts the "
    "connector within a second. Config-file connectors: 409.",
)
async def patch_connector(call: Call) -> ConnectorOut:
    """Apply a merge patch to a connector."""
    change = call.body.model_dump(exclude_unset=True)
    try:
        return await connectors.patch(
            call.ctx.engine,
            _box(call),
            call.ctx.settings,
            call.tenant,
            call.params["id"],
            change,
            _actor(call),
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc


@routes.delete(
    "/v1/connectors/{id}",
    summary="Delete a connector",
    status=204,
    errors=ERRORS,
    description="The runner stops it within a second; what it announced stays recorded, so "
    "a connector created again with the same name does not announce those files again.",
)
async def delete_connector(call: Call) -> None:
    """Delete a connector."""
    await connectors.remove(
        call.ctx.engine, call.ctx.settings, call.tenant, call.params["id"], _actor(call)
    )


@routes.post(
    "/v1/connectors/{id}/keypair",
    summary="Generate an SFTP key pair for a connector",
    response=ConnectorOut,
    errors=ERRORS,
    description="Replaces the connector's password or private key with a new Ed25519 key; "
    "public_key is the line for the server's authorized_keys "
    "('ssh-ed25519 AAAA... callstream-<tenant>-<connector>'). The private key never leaves "
    "callstream. sftp connectors only (409 otherwise).",
)
async def generate_connector_keypair(call: Call) -> ConnectorOut:
    """Give an SFTP connector a new key pair."""
    try:
        return await connectors.generate_keypair(
            call.ctx.engine,
            _box(call),
            call.ctx.settings,
            call.tenant,
            call.params["id"],
            _actor(call),
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _actor(call: Call) -> str:
    return call.principal.actor


TEST_TIMEOUT_SECONDS = 10.0
"""Longest a connection test may take (every step together)."""


async def _probe(call: Call, store: StoreConfig, from_api: bool) -> ProbeReport:
    guard = guard_for(call.ctx.settings, from_api)
    return await asyncio.to_thread(probe, store, guard, TEST_TIMEOUT_SECONDS)


@routes.post(
    "/v1/connectors/{id}/test",
    summary="Test a connector's connection, step by step",
    response=ProbeReport,
    errors=(404,),
    description="SFTP: resolve, connect, host_key, authenticate, list; S3: resolve, "
    "head_bucket, list; local: path. Stops at the first failing step (the rest are skipped), "
    "within 10 s. Hosts that resolve to loopback, link-local, private or multicast addresses "
    "are refused at resolve unless api.connect_allow covers them. A failing test is a 200 "
    "with ok=false.",
)
async def test_connector(call: Call) -> ProbeReport:
    """Test a saved connector (config-file ones too)."""
    settings, from_api = await connectors.settings_of(
        call.ctx.engine, _box(call), call.ctx.settings, call.tenant, call.params["id"]
    )
    return await _probe(call, settings.store, from_api)


@routes.post(
    "/v1/connector-tests",
    summary="Test a connector before saving it",
    body=ConnectorIn,
    response=ProbeReport,
    description="The same steps as /v1/connectors/{id}/test, for a connector body that is not "
    "saved. A local folder must lie in the tenant's folder, as for a saved connector.",
)
async def test_unsaved_connector(call: Call) -> ProbeReport:
    """Test a connector body without saving it."""
    store = call.body.store
    if isinstance(store, LocalConfig):
        allowed = connectors.local_root_allowed(call.ctx.settings, call.tenant, store.root)
        if allowed is not None:
            raise Unprocessable(
                "invalid connector",
                [FieldError(field="store.root", message=f"must be inside {allowed}")],
            )
    return await _probe(call, store, True)
