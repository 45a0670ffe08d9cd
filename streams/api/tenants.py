"""Tenants (operator) and the caller's own tenant.

Every tenant shown carries its ``redaction`` (a config-file tenant's as the config file says);
a change of it through PATCH applies to this process's redaction at once (see
:mod:`streams.control.tenants`).
"""

from __future__ import annotations

from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.routing import ApiRoutes, Call
from streams.control import tenants
from streams.control.tenants import Tenant, TenantIn, TenantPatch, shown

routes = ApiRoutes(
    "tenants", "Customers (operator token); a disabled tenant's keys and connectors stop working."
)


@routes.post(
    "/v1/tenants",
    summary="Create a tenant",
    auth="operator",
    body=TenantIn,
    response=Tenant,
    status=201,
    errors=(409,),
)
async def create_tenant(call: Call) -> Tenant:
    """Create an active tenant; 409 when the id is taken."""
    created = await tenants.create(call.ctx.engine, call.body, call.principal.actor)
    return shown(created, call.ctx.redactors())


@routes.get(
    "/v1/tenants", summary="List tenants", auth="operator", query=PageQuery, response=Page[Tenant]
)
async def list_tenants(call: Call) -> Page[Tenant]:
    """List tenants by id."""
    after = decode_cursor(call.query.cursor, 1)
    limit = min(call.query.limit, call.ctx.settings.api.max_page_size)
    async with call.ctx.engine.connect() as conn:
        items = await tenants.list_all(conn, after[0] if after else None, limit + 1)
    more = len(items) > limit
    items = [shown(t, call.ctx.redactors()) for t in items[:limit]]
    return Page[Tenant](items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


@routes.get("/v1/tenants/{tenant_id}", summary="Get a tenant", auth="operator", response=Tenant)
async def get_tenant(call: Call) -> Tenant:
    """Return one tenant."""
    async with call.ctx.engine.connect() as conn:
        found = await tenants.get(conn, call.params["tenant_id"])
    return shown(found, call.ctx.redactors())


@routes.patch(
    "/v1/tenants/{tenant_id}",
    summary="Change a tenant's settings (time zone, notification addresses, redaction)",
    auth="operator",
    body=TenantPatch,
    response=Tenant,
    errors=(409,),
)
async def update_tenant(call: Call) -> Tenant:
    """Change a tenant's settings; 422 names an unknown time zone, a bad address or redaction
    field, 409 a config-file tenant's redaction."""
    return await _update(call, call.params["tenant_id"])


@routes.post(
    "/v1/tenants/{tenant_id}/disable",
    summary="Disable a tenant: its connectors stop and its API keys fail",
    auth="operator",
    response=Tenant,
)
async def disable_tenant(call: Call) -> Tenant:
    """Disable a tenant (idempotent)."""
    changed = await tenants.set_status(
        call.ctx.engine, call.params["tenant_id"], "disabled", call.principal.actor
    )
    return shown(changed, call.ctx.redactors())


@routes.post(
    "/v1/tenants/{tenant_id}/enable",
    summary="Enable a disabled tenant again",
    auth="operator",
    response=Tenant,
)
async def enable_tenant(call: Call) -> Tenant:
    """Enable a tenant (idempotent)."""
    changed = await tenants.set_status(
        call.ctx.engine, call.params["tenant_id"], "active", call.principal.actor
    )
    return shown(changed, call.ctx.redactors())


@routes.get("/v1/tenant", summary="The caller's own tenant", response=Tenant)
async def get_own_tenant(call: Call) -> Tenant:
    """Return the tenant the API key belongs to."""
    async with call.ctx.engine.connect() as conn:
        found = await tenants.get(conn, call.tenant)
    return shown(found, call.ctx.redactors())


@routes.patch(
    "/v1/tenant",
    summary="Change the caller's tenant settings (time zone, notification addresses, redaction)",
    body=TenantPatch,
    response=Tenant,
    errors=(409,),
)
async def update_own_tenant(call: Call) -> Tenant:
    """Change the caller's tenant settings; 422 names an unknown time zone, a bad address or
    redaction field, 409 a config-file tenant's redaction."""
    return await _update(call, call.tenant)


async def _update(call: Call, tenant_id: str) -> Tenant:
    redactors = call.ctx.redactors()
    changed = await tenants.update_settings(
        call.ctx.engine, tenant_id, call.body, call.principal.actor, call.ctx.clock.now(), redactors
    )
    return shown(changed, redactors)
