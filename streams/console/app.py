"""Serve the console at ``/console``: sign-in and sign-out, static files, every section's pages.

Sign-in takes a tenant's API key or the operator token, checked exactly as the API checks a
bearer token, and starts a server-side session (:mod:`streams.control.sessions`) whose id rides
in an HttpOnly, SameSite=Strict cookie, Secure when the console is reached over TLS.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from streams.api.context import ApiContext
from streams.api.routing import ApiRoutes
from streams.console import filters
from streams.console.core import (
    CONSOLE,
    COOKIE,
    Console,
    Pages,
    current_session,
    security_headers,
    wrap,
)
from streams.console.pages import SECTIONS
from streams.control import keys, sessions

HERE = Path(__file__).parent
STATIC = HERE / "static"
_BAD_SIGN_IN = (
    "That key or token is not valid: unknown, revoked or malformed, or its tenant is off."
)


def _next(raw: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    if not raw:
        return "/console"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or "\\" in raw:
        return "/console"
    return raw


def _secure(console: Console, request: web.Request) -> bool:
    public = console.ctx.settings.http.public_url or ""
    return request.secure or public.startswith("https://")


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form (a live session goes straight on)."""
    console = request.app[CONSOLE]
    if await current_session(console, request) is not None:
        raise web.HTTPSeeOther(_next(request.query.get("next")))
    return _sign_in_form(request, None, 200)


def _sign_in_form(request: web.Request, error: str | None, status: int) -> web.Response:
    context = {"error": error, "next": _next(request.query.get("next")), "signed_out": False}
    context["signed_out"] = request.query.get("signed_out") == "1"
    return aiohttp_jinja2.render_template("sign_in.html", request, context, status=status)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check the key or token, start a session, set the cookie, go on."""
    console = request.app[CONSOLE]
    form = await request.post()
    secret = form.get("secret")
    secret = secret.strip() if isinstance(secret, str) else ""
    operator = console.operator_token()
    engine = console.ctx.engine
    now = console.now()
    if not secret:
        return _sign_in_form(request, "Enter an API key or the operator token.", 422)
    if operator is not None and hmac.compare_digest(secret.encode(), operator.encode()):
        cookie = await sessions.create(
            engine,
            now=now,
            max_age=console.max_age,
            tenant=None,
            key_id=None,
            operator_token=operator,
        )
        target = "/console/tenants"
    else:
        owner = await keys.authenticate(engine, secret)
        if owner is None:
            return _sign_in_form(request, _BAD_SIGN_IN, 401)
        cookie = await sessions.create(
            engine, now=now, max_age=console.max_age, tenant=owner.tenant, key_id=owner.key_id
        )
        target = _next(str(form.get("next") or ""))
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        secure=_secure(console, request),
        samesite="Strict",
        path="/console",
        max_age=int(console.max_age.total_seconds()),
    )
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session (CSRF-checked) and forget the cookie."""
    console = request.app[CONSOLE]
    session = await current_session(console, request)
    if session is not None:
        form = await request.post()
        token = form.get("csrf_token")
        if not session.csrf_ok(token if isinstance(token, str) else None):
            raise web.HTTPForbidden(text="the form has expired: reload the page and retry")
        await sessions.end(console.ctx.engine, request.cookies[COOKIE])
    response = web.HTTPSeeOther("/console/sign-in?signed_out=1")
    response.del_cookie(COOKIE, path="/console")
    raise response


async def home(_request: web.Request) -> web.StreamResponse:
    """The console's first page: Data Import."""
    raise web.HTTPSeeOther("/console/import")


async def favicon(_request: web.Request) -> web.StreamResponse:
    """Browsers ask for /favicon.ico whatever the page says."""
    return web.FileResponse(STATIC / "favicon.ico")


def install(app: web.Application, ctx: ApiContext, groups: list[ApiRoutes]) -> None:
    """Serve the console on ``app`` (its pages call ``groups``' operations in process)."""
    console = Console(ctx, groups)
    app[CONSOLE] = console
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    filters.register(env)
    app.middlewares.append(security_headers)
    app.router.add_get("/console", home)
    app.router.add_get("/console/", home)
    app.router.add_get("/console/sign-in", sign_in_page)
    app.router.add_post("/console/sign-in", sign_in)
    app.router.add_post("/console/sign-out", sign_out)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/console/static", STATIC)
    section: Pages
    for section in SECTIONS:
        for method, path, handler, scope in section.routes:
            app.router.add_route(method, path, wrap(console, section.nav, handler, scope))
