"""API keys: a tenant manages its own; the operator creates a tenant's first one."""

from __future__ import annotations

from pydantic import BaseModel, Field

from streams.api.routing import ApiRoutes, Call
from streams.control import keys
from streams.control import tenants as tenant_ops
from streams.control.keys import ApiKey, ApiKeyCreated, ApiKeyIn

routes = ApiRoutes(
    "api-keys",
    "At most 2 active keys per tenant; the full key is shown once, at creation.",
)


class ApiKeyList(BaseModel):
    """A tenant's keys, newest first (at most 2 active; revoked ones stay listed)."""

    items: list[ApiKey] = Field(description="Active and revoked keys.")


@routes.get("/v1/keys", summary="List the caller's API keys", response=ApiKeyList)
async def list_own_keys(call: Call) -> ApiKeyList:
    """List the caller's tenant's keys."""
    async with call.ctx.engine.connect() as conn:
        return ApiKeyList(items=await keys.list_keys(conn, call.tenant))


@routes.post(
    "/v1/keys",
    summary="Create an API key (shown once)",
    body=ApiKeyIn,
    response=ApiKeyCreated,
    status=201,
    errors=(409,),
)
async def create_own_key(call: Call) -> ApiKeyCreated:
    """Create a key for the caller's tenant; 409 when it has 2 active keys."""
    return await keys.create(call.ctx.engine, call.tenant, call.body, call.principal.actor)


@routes.post(
    "/v1/keys/{key_id}/revoke", summary="Revoke one of the caller's API keys", response=ApiKey
)
async def revoke_own_key(call: Call) -> ApiKey:
    """Revoke a key (idempotent); another tenant's key is 404."""
    return await keys.revoke(
        call.ctx.engine, call.tenant, call.params["key_id"], call.principal.actor
    )


@routes.get(
    "/v1/tenants/{tenant_id}/keys",
    summary="List a tenant's API keys",
    auth="operator",
    response=ApiKeyList,
)
async def list_tenant_keys(call: Call) -> ApiKeyList:
    """List a tenant's keys (operator)."""
    async with call.ctx.engine.connect() as conn:
        await tenant_ops.get(conn, call.params["tenant_id"])
        return ApiKeyList(items=await keys.list_keys(conn, call.params["tenant_id"]))


@routes.post(
    "/v1/tenants/{tenant_id}/keys",
    summary="Create an API key for a tenant (shown once)",
    auth="operator",
    body=ApiKeyIn,
    response=ApiKeyCreated,
    status=201,
    errors=(409,),
)
async def create_tenant_key(call: Call) -> ApiKeyCreated:
    """Create a key for a tenant (operator); 409 when it has 2 active keys."""
    return await keys.create(
        call.ctx.engine, call.params["tenant_id"], call.body, call.principal.actor
    )


@routes.post(
    "/v1/tenants/{tenant_id}/keys/{key_id}/revoke",
    summary="Revoke a tenant's API key",
    auth="operator",
    response=ApiKey,
)
async def revoke_tenant_key(call: Call) -> ApiKey:
    """Revoke a tenant's key (operator)."""
    return await keys.revoke(
        call.ctx.engine, call.params["tenant_id"], call.params["key_id"], call.principal.actor
    )
