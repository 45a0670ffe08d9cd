"""Export connectors of the caller's tenant: CRUD and connection tests (rules in
:mod:`streams.control.destinations`, tests and delivery in :mod:`streams.exports.deliver`)."""

from __future__ import annotations

from pydantic import ValidationError

from connectors.probe import ProbeReport
from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import Unprocessable, field_errors
from streams.api.routing import ApiRoutes, Call
from streams.control import destinations
from streams.control.destinations import (
    ExportConnectorIn,
    ExportConnectorOut,
    ExportConnectorPatch,
)
from streams.control.secrets import SecretBox
from streams.exports.deliver import check_destination

routes = ApiRoutes(
    "export-connectors",
    "Export connectors (sftp, s3, email) of the caller's tenant: where export jobs deliver "
    "reports. Secrets are write-only: responses mask them.",
)

TEST_TIMEOUT_SECONDS = 10.0
"""Longest a connection test may take (every step together)."""

TEST_DESCRIPTION = (
    "SFTP: resolve, connect, host_key, authenticate, write, delete (a probe file "
    "'.callstream-probe-<hex>' written into the remote folder and deleted); S3: resolve, write, "
    "delete (a probe object under the prefix); email: addresses, connect, ehlo, starttls, auth "
    "through the operator's SMTP relay (no mail is sent). Stops at the first failing step (the "
    "rest are skipped), within 10 s. Hosts that resolve to loopback, link-local, private or "
    "multicast addresses are refused at resolve unless api.connect_allow covers them. A failing "
    "test is a 200 with ok=false."
)


def _box(call: Call) -> SecretBox:
    box = call.ctx.secrets
    if box is None:
        raise RuntimeError("the API context has no secret box (ApiContext.secrets)")
    return box


def _invalid(exc: ValidationError) -> Unprocessable:
    return Unprocessable("invalid export connector", field_errors(exc))


@routes.post(
    "/v1/export-connectors",
    summary="Create an export connector",
    body=ExportConnectorIn,
    response=ExportConnectorOut,
    status=201,
    errors=(409,),
    description="config.type sftp (remote folder 'root', pinned host_key, password or "
    "private_key or generate_keypair), s3 (bucket, prefix, keys) or email (1-20 addresses in "
    "'to'). 409 when the name is taken.",
)
async def create_export_connector(call: Call) -> ExportConnectorOut:
    """Create an export connector."""
    try:
        return await destinations.create(
            call.ctx.engine,
            _box(call),
            call.tenant,
            call.body,
            call.principal.actor,
            call.ctx.clock.now(),
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc


@routes.get(
    "/v1/export-connectors",
    summary="List export connectors",
    query=PageQuery,
    response=Page[ExportConnectorOut],
)
async def list_export_connectors(call: Call) -> Page[ExportConnectorOut]:
    """List the tenant's export connectors by name."""
    after = decode_cursor(call.query.cursor, 1)
    limit = min(call.query.limit, call.ctx.settings.api.max_page_size)
    items, more = await destinations.list_page(
        call.ctx.engine, call.tenant, str(after[0]) if after else None, limit
    )
    cursor = encode_cursor([items[-1].name]) if more and items else None
    return Page[ExportConnectorOut](items=items, next_cursor=cursor)


@routes.get(
    "/v1/export-connectors/{connector_id}",
    summary="Get an export connector",
    response=ExportConnectorOut,
    errors=(404,),
)
async def get_export_connector(call: Call) -> ExportConnectorOut:
    """Return one export connector, secrets masked."""
    return await destinations.get(call.ctx.engine, call.tenant, call.params["connector_id"])


@routes.patch(
    "/v1/export-connectors/{connector_id}",
    summary="Change an export connector (JSON merge patch)",
    body=ExportConnectorPatch,
    response=ExportConnectorOut,
    errors=(404, 409),
    description="Members sent replace the current ones, null resets one to its default, "
    "omitted members and secrets sent back as '**********' keep their value; a different "
    "config.type replaces the whole config. 409 when a new name is taken.",
)
async def patch_export_connector(call: Call) -> ExportConnectorOut:
    """Apply a merge patch to an export connector."""
    try:
        return await destinations.patch(
            call.ctx.engine,
            _box(call),
            call.tenant,
            call.params["connector_id"],
            call.body.model_dump(exclude_unset=True),
            call.principal.actor,
            call.ctx.clock.now(),
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc


@routes.delete(
    "/v1/export-connectors/{connector_id}",
    summary="Delete an export connector",
    status=204,
    errors=(404,),
)
async def delete_export_connector(call: Call) -> None:
    """Delete an export connector."""
    await destinations.remove(
        call.ctx.engine,
        call.tenant,
        call.params["connector_id"],
        call.principal.actor,
        call.ctx.clock.now(),
    )


@routes.post(
    "/v1/export-connectors/{connector_id}/test",
    summary="Test an export connector's connection, step by step",
    response=ProbeReport,
    errors=(404,),
    description=TEST_DESCRIPTION,
)
async def probe_export_connector(call: Call) -> ProbeReport:
    """Test a saved export connector."""
    destination = await destinations.get_destination(
        call.ctx.engine, _box(call), call.tenant, call.params["connector_id"]
    )
    return await check_destination(
        call.ctx.settings, destination.config, timeout_seconds=TEST_TIMEOUT_SECONDS
    )


@routes.post(
    "/v1/export-connector-tests",
    summary="Test an export connector before saving it",
    body=ExportConnectorIn,
    response=ProbeReport,
    description="The same steps as /v1/export-connectors/{connector_id}/test, for a body "
    "that is not saved.",
)
async def probe_unsaved_export_connector(call: Call) -> ProbeReport:
    """Test an export connector body without saving it."""
    try:
        destinations.check(call.body.config)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    return await check_destination(
        call.ctx.settings, call.body.config, timeout_seconds=TEST_TIMEOUT_SECONDS
    )
