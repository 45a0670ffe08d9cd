"""``/v1/dropbox/accounts``: the tenant's logins to the hosted SFTP drop box.

Passwords are write-only (``has_password`` tells whether one is set); see
:mod:`streams.control.dropbox` for the account rules and :mod:`streams.dropbox.server` for what
a login may do.
"""

from __future__ import annotations

from pydantic import ValidationError

from streams.api.problems import Unprocessable, field_errors
from streams.api.routing import ApiRoutes, Call
from streams.control import dropbox
from streams.control.dropbox import (
    DropboxAccount,
    DropboxAccountIn,
    DropboxAccountList,
    DropboxAccountPatch,
)
from streams.control.secrets import SecretBox

routes = ApiRoutes(
    "dropbox",
    "Accounts of the hosted SFTP drop box: each uploads into one of the tenant's local "
    "connectors, confined to its folder, from allowed addresses, within its quotas.",
)


def _box(call: Call) -> SecretBox:
    box = call.ctx.secrets
    if box is None:
        raise RuntimeError("the API context has no secret box (ApiContext.secrets)")
    return box


@routes.post(
    "/v1/dropbox/accounts",
    summary="Create a drop-box account",
    body=DropboxAccountIn,
    response=DropboxAccount,
    status=201,
    errors=(404, 409),
    description="404 when the connector is not the tenant's; 409 when the username is taken; "
    "422 when the connector is not a local-folder one.",
)
async def create_dropbox_account(call: Call) -> DropboxAccount:
    """Create an account; it can log in at once."""
    try:
        return await dropbox.create(
            call.ctx.engine,
            _box(call),
            call.ctx.settings,
            call.tenant,
            call.body,
            call.principal.actor,
        )
    except ValidationError as exc:
        raise Unprocessable("invalid drop-box account", field_errors(exc)) from exc


@routes.get("/v1/dropbox/accounts", summary="List drop-box accounts", response=DropboxAccountList)
async def list_dropbox_accounts(call: Call) -> DropboxAccountList:
    """The tenant's accounts by username."""
    async with call.ctx.engine.connect() as conn:
        items = await dropbox.list_accounts(conn, call.ctx.settings, call.tenant)
    return DropboxAccountList(items=items)


@routes.get(
    "/v1/dropbox/accounts/{account_id}",
    summary="Get a drop-box account",
    response=DropboxAccount,
    errors=(404,),
)
async def get_dropbox_account(call: Call) -> DropboxAccount:
    """One of the tenant's accounts, with today's uploaded bytes."""
    async with call.ctx.engine.connect() as conn:
        return await dropbox.get(conn, call.ctx.settings, call.tenant, call.params["account_id"])


@routes.patch(
    "/v1/dropbox/accounts/{account_id}",
    summary="Change a drop-box account",
    body=DropboxAccountPatch,
    response=DropboxAccount,
    errors=(404,),
    description="Only the members sent change; password null removes the password (a public "
    "key must remain).",
)
async def patch_dropbox_account(call: Call) -> DropboxAccount:
    """Change an account; the next login uses the change."""
    try:
        return await dropbox.patch(
            call.ctx.engine,
            call.ctx.settings,
            call.tenant,
            call.params["account_id"],
            call.body,
            call.principal.actor,
        )
    except ValidationError as exc:
        raise Unprocessable("invalid drop-box account", field_errors(exc)) from exc


@routes.delete(
    "/v1/dropbox/accounts/{account_id}",
    summary="Delete a drop-box account",
    status=204,
    errors=(404,),
    description="The account can no longer log in; its files stay in the connector's folder.",
)
async def delete_dropbox_account(call: Call) -> None:
    """Delete an account."""
    await dropbox.remove(
        call.ctx.engine, call.tenant, call.params["account_id"], call.principal.actor
    )
