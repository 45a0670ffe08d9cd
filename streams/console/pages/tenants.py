"""Tenants, for the operator (``/v1/tenants``): list and create tenants, disable and enable
them, generate a tenant's API key (shown once), and open the console as a tenant.

Every page needs an operator session (scope ``operator``: anyone else gets the 404 page).
"Open console as this tenant" points the operator's session at the tenant
(:func:`streams.control.sessions.open_tenant`) after checking the tenant exists; the tenant's
sections then act with the operator's principal scoped to it. "Back to tenants" closes it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input, submitted
from streams.control import sessions

pages = Pages("tenants")

CREATE = [
    Input(
        "id",
        "Tenant id",
        required=True,
        hint="Lower-case letters, digits, '-' and '_'; it cannot change later.",
    ),
    Input("name", "Display name", required=True),
]
ONE = "/v1/tenants/{tenant_id}"


async def _list(
    view: View,
    *,
    failure: ApiFailure | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    page = await view.api(
        "GET", "/v1/tenants", query={"limit": "500", "cursor": view.request.query.get("after")}
    )
    return view.render(
        "tenants/list.html",
        status,
        page=page,
        specs=CREATE,
        values=values or {},
        errors=failure.errors if failure else {},
        failure=failure,
    )


@pages.get("/console/tenants", scope="operator")
async def tenant_list(view: View) -> web.StreamResponse:
    """Every tenant with its status, and the form of a new one."""
    return await _list(view)


@pages.post("/console/tenants", scope="operator")
async def create_tenant(view: View) -> web.StreamResponse:
    """Create an active tenant (it has no API key yet)."""
    body = {"id": view.field("id"), "name": view.field("name")}
    try:
        created = await view.api("POST", "/v1/tenants", body=body)
    except ApiFailure as failure:
        values = submitted(view.posted, CREATE)
        return await _list(view, failure=failure, values=values, status=failure.status)
    return await view.redirect(
        f"/console/tenants/{created.id}", f"Tenant {created.id} is created: generate its API key."
    )


@pages.post("/console/tenants/close", scope="operator")
async def close_tenant(view: View) -> web.StreamResponse:
    """Leave the tenant's console: back to the operator's tenants list."""
    await sessions.open_tenant(view.console.ctx.engine, view.session, None)
    return await view.redirect("/console/tenants")


async def _detail(
    view: View,
    *,
    created: Any = None,
    failure: ApiFailure | None = None,
    name: str = "",
    status: int = 200,
) -> web.Response:
    params = {"tenant_id": view.request.match_info["tenant_id"]}
    tenant = await view.api("GET", ONE, params=params)
    keys = await view.api("GET", ONE + "/keys", params=params)
    return view.render(
        "tenants/detail.html",
        status,
        t=tenant,
        keys=keys.items,
        created=created,
        failure=failure,
        name=name,
    )


@pages.get("/console/tenants/{tenant_id}", scope="operator")
async def tenant_detail(view: View) -> web.StreamResponse:
    """One tenant: its facts, its keys (masked), generate a key, open its console."""
    return await _detail(view)


@pages.post("/console/tenants/{tenant_id}/keys", scope="operator")
async def generate_key(view: View) -> web.StreamResponse:
    """Generate a key for the tenant and show it in full, this once (409: 2 are active)."""
    name = view.field("name")
    params = {"tenant_id": view.request.match_info["tenant_id"]}
    try:
        created = await view.api("POST", ONE + "/keys", params=params, body={"name": name})
    except ApiFailure as failure:
        return await _detail(view, failure=failure, name=name, status=failure.status)
    return await _detail(view, created=created)


@pages.post("/console/tenants/{tenant_id}/open", scope="operator")
async def open_tenant(view: View) -> web.StreamResponse:
    """Act as the tenant in the console (its sections), after checking it exists."""
    tenant = await view.api("GET", ONE, params=dict(view.request.match_info))
    await sessions.open_tenant(view.console.ctx.engine, view.session, tenant.id)
    return await view.redirect("/console/import", f"You are in the console of tenant {tenant.id}.")


@pages.get("/console/tenants/{tenant_id}/disable", scope="operator")
async def confirm_disable(view: View) -> web.StreamResponse:
    """Ask before disabling."""
    tenant = await view.api("GET", ONE, params=dict(view.request.match_info))
    return view.render("tenants/disable.html", t=tenant)


@pages.post("/console/tenants/{tenant_id}/disable", scope="operator")
async def disable_tenant(view: View) -> web.StreamResponse:
    """Disable the tenant: its connectors stop and its API keys are refused."""
    tenant = await view.api("POST", ONE + "/disable", params=dict(view.request.match_info))
    return await view.redirect(f"/console/tenants/{tenant.id}", f"Tenant {tenant.id} is disabled.")


@pages.post("/console/tenants/{tenant_id}/enable", scope="operator")
async def enable_tenant(view: View) -> web.StreamResponse:
    """Enable the tenant again."""
    tenant = await view.api("POST", ONE + "/enable", params=dict(view.request.match_info))
    return await view.redirect(f"/console/tenants/{tenant.id}", f"Tenant {tenant.id} is enabled.")
