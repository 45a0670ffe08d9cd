"""API Access: the tenant's API keys (``/v1/keys``), a new key shown once, revoking a key.

A new key is answered with the page itself (not a redirect), so its full value exists only in
that one response (``Cache-Control: no-store``); afterwards only its mask is listed. A tenant has
at most 2 active keys: the API refuses a third (409), and the page says why and what to do.
Revoking the key this console session signed in with ends the session: the confirmation page
says so.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, NotFoundPage, Pages, View
from streams.control.keys import MAX_ACTIVE_KEYS

pages = Pages("keys")


async def _keys(view: View) -> list[Any]:
    listed = await view.api("GET", "/v1/keys")
    return list(listed.items)


async def _page(
    view: View,
    *,
    created: Any = None,
    failure: ApiFailure | None = None,
    name: str = "",
    status: int = 200,
) -> web.Response:
    items = await _keys(view)
    active = sum(1 for k in items if k.status == "active")
    return view.render(
        "keys/list.html",
        status,
        keys=items,
        active=active,
        limit=MAX_ACTIVE_KEYS,
        created=created,
        failure=failure,
        name=name,
        current=view.session.key_id,
    )


@pages.get("/console/keys")
async def key_list(view: View) -> web.StreamResponse:
    """The tenant's keys (masked) and the form to generate one."""
    return await _page(view)


@pages.post("/console/keys")
async def generate_key(view: View) -> web.StreamResponse:
    """Generate a key and show it in full, this once."""
    name = view.field("name")
    try:
        created = await view.api("POST", "/v1/keys", body={"name": name})
    except ApiFailure as failure:
        return await _page(view, failure=failure, name=name, status=failure.status)
    return await _page(view, created=created)


async def _key(view: View) -> Any:
    key_id = view.request.match_info["key_id"]
    for key in await _keys(view):
        if key.key_id == key_id:
            return key
    raise NotFoundPage(f"no API key {key_id!r}")


@pages.get("/console/keys/{key_id}/revoke")
async def confirm_revoke(view: View) -> web.StreamResponse:
    """Ask before revoking (and warn when it is the key this session signed in with)."""
    key = await _key(view)
    return view.render("keys/revoke.html", key=key, current=key.key_id == view.session.key_id)


@pages.post("/console/keys/{key_id}/revoke")
async def revoke_key(view: View) -> web.StreamResponse:
    """Revoke the key; when it is this session's own, the next page asks to sign in again."""
    key = await _key(view)
    await view.api("POST", "/v1/keys/{key_id}/revoke", params={"key_id": key.key_id})
    if key.key_id == view.session.key_id:
        return await view.redirect("/console/sign-in")
    return await view.redirect("/console/keys", f"API key {key.name} is revoked.")
