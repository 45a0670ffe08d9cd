"""What every console page stands on: the session, CSRF, calling the API, rendering.

A page handler is declared with :func:`page` on a :class:`Pages` table and receives a
:class:`View`. It reads and changes data **only through** :meth:`View.api`, which runs the very
``/v1`` operation (:func:`streams.api.routing.invoke`) with the session's principal: the same
validation, the same tenant scoping, the same errors. The console adds no query of its own.

Contract of every page, enforced here:

- No live session: GET redirects to the sign-in page (coming back afterwards), anything else is
  401. A page of a tenant (the default) needs a session with a tenant: an operator who has not
  opened one is sent to the tenants list.
- Every POST carries the session's CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``), else 403 and nothing happens.
- An API "not found" is the console's 404 page (another tenant's id is simply not found); a
  conflict or a validation error is handed back to the page (:class:`ApiFailure`) to show
  beside the form.
- Responses are ``Cache-Control: no-store`` with a strict Content-Security-Policy (scripts and
  styles only from ``/console/static``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from streams.api.context import ApiContext
from streams.api.problems import ApiError, FieldError, NotFound, Unauthorized, api_error
from streams.api.routing import ApiRoutes, Operation, Principal, invoke
from streams.control import sessions
from streams.control.errors import ControlError
from streams.control.sessions import Session

log = logging.getLogger(__name__)

COOKIE = "callstream_console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)

Scope = Literal["tenant", "operator", "any"]


class ApiFailure(Exception):
    """An API call refused the request (409, 422, 403, 400): shown beside the form."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.detail or error.title)
        self.status = error.status
        self.detail = error.detail or error.title
        self.errors: dict[str, str] = {}
        for item in error.errors:
            self.errors.setdefault(_form_name(item), item.message)

    @property
    def messages(self) -> list[str]:
        """Every message, the general one first."""
        return [self.detail, *(f"{k}: {v}" for k, v in self.errors.items())]


def _form_name(item: FieldError) -> str:
    """The form field an API error names (the console's fields use the API's dotted paths)."""
    name = item.field
    return name[len("query.") :] if name.startswith("query.") else name


class Console:
    """The console's view of the service: the API context and its operations by path."""

    def __init__(self, ctx: ApiContext, groups: list[ApiRoutes]) -> None:
        self.ctx = ctx
        self.operations: dict[tuple[str, str], Operation] = {
            (op.method, op.path): op for group in groups for op in group.operations
        }

    def now(self) -> dt.datetime:
        """The service clock's time (a manual clock in tests)."""
        return self.ctx.clock.now()

    @property
    def idle(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.ctx.settings.console.session_idle_minutes)

    @property
    def max_age(self) -> dt.timedelta:
        return dt.timedelta(hours=self.ctx.settings.console.session_max_hours)

    def operator_token(self) -> str | None:
        token = self.ctx.settings.api.operator_token
        return None if token is None else token.get_secret_value()


CONSOLE = web.AppKey("console", Console)


@dataclass
class View:
    """One console request: the session, the form (POST) and the ways to answer."""

    request: web.Request
    console: Console
    session: Session
    form: MultiDictProxy[Any] | None = None
    nav: str = ""

    @property
    def principal(self) -> Principal:
        """The session's principal, as the API sees it."""
        return Principal(
            tenant=self.session.tenant,
            key_id=self.session.key_id,
            operator=self.session.operator,
            user_id=self.session.user_id,
        )

    @property
    def tenant(self) -> str:
        """The tenant this session acts for (pages of a tenant only)."""
        if self.session.tenant is None:
            raise RuntimeError("a page of a tenant ran without one (scope='tenant' prevents it)")
        return self.session.tenant

    async def api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """Run the API operation ``method path`` (a path as declared, e.g. ``/v1/jobs/{job_id}``).

        Returns what the operation returns (a pydantic model, None, or a response). Raises
        :class:`web.HTTPNotFound` for 404 (rendered as the console's 404 page), sends the user to
        sign in on 401, and raises :class:`ApiFailure` for every other refusal.
        """
        op = self.console.operations[(method, path)]
        try:
            return await invoke(
                op,
                self.console.ctx,
                self.request,
                self.principal,
                dict(params or {}),
                query=dict(query or {}),
                body=body,
            )
        except ControlError as exc:
            error: ApiError = api_error(exc)
        except ApiError as exc:
            error = exc
        if isinstance(error, NotFound):
            raise NotFoundPage(error.detail or "not found")
        if isinstance(error, Unauthorized):
            raise web.HTTPSeeOther(sign_in_url(self.request))
        raise ApiFailure(error)

    @property
    def posted(self) -> MultiDictProxy[Any]:
        """The submitted form (POST pages only)."""
        if self.form is None:
            raise RuntimeError("no form: this is not a POST page")
        return self.form

    def field(self, name: str, default: str = "") -> str:
        """A submitted form field ('' when absent), stripped of surrounding blanks."""
        if self.form is None:
            return default
        value = self.form.get(name, default)
        return value.strip() if isinstance(value, str) else default

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        """Render ``template`` with the page's common context."""
        base = {
            "session": self.session,
            "csrf_token": self.session.csrf_token,
            "flash": self.session.flash,
            "nav": self.nav,
            "tenant": self.session.tenant,
            "operator": self.session.operator,
            "path": self.request.path,
        }
        response = aiohttp_jinja2.render_template(
            template, self.request, base | context, status=status
        )
        return response

    async def redirect(self, location: str, flash: str | None = None) -> web.Response:
        """A 303 to ``location`` (Post/Redirect/Get), with ``flash`` shown there."""
        if flash:
            await sessions.set_flash(self.console.ctx.engine, self.session, flash)
        return web.Response(status=303, headers={"Location": location})

    @property
    def htmx(self) -> bool:
        """True when htmx sent the request (answer with the fragment only)."""
        return self.request.headers.get("HX-Request") == "true"


class NotFoundPage(Exception):
    """Answer with the console's 404 page."""


PageHandler = Callable[[View], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Pages:
    """The pages of one console section (one module under ``streams/console/pages``)."""

    nav: str
    routes: list[tuple[str, str, PageHandler, Scope]] = field(default_factory=list)

    def get(self, path: str, scope: Scope = "tenant") -> Callable[[PageHandler], PageHandler]:
        return self._add("GET", path, scope)

    def post(self, path: str, scope: Scope = "tenant") -> Callable[[PageHandler], PageHandler]:
        return self._add("POST", path, scope)

    def _add(self, method: str, path: str, scope: Scope) -> Callable[[PageHandler], PageHandler]:
        def register(handler: PageHandler) -> PageHandler:
            self.routes.append((method, path, handler, scope))
            return handler

        return register


def sign_in_url(request: web.Request) -> str:
    """The sign-in page, coming back to this page (GET) afterwards."""
    back = request.path_qs if request.method == "GET" else "/console"
    return "/console/sign-in?next=" + quote(back, safe="")


async def current_session(console: Console, request: web.Request) -> Session | None:
    """The request's live session, else None."""
    return await sessions.load(
        console.ctx.engine,
        request.cookies.get(COOKIE),
        now=console.now(),
        idle=console.idle,
        operator_token=console.operator_token(),
    )


def wrap(console: Console, nav: str, handler: PageHandler, scope: Scope) -> Handler:
    """Give ``handler`` its session, CSRF check and error pages (see the module doc)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        session = await current_session(console, request)
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(sign_in_url(request))
            raise web.HTTPUnauthorized(text="sign in again: the session has ended")
        view = View(request, console, session, nav=nav)
        if request.method == "POST":
            view.form = await request.post()
            token = view.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
            if not session.csrf_ok(token if isinstance(token, str) else None):
                raise web.HTTPForbidden(text="the form has expired: reload the page and retry")
        if scope == "tenant" and session.tenant is None:
            raise web.HTTPSeeOther("/console/tenants")
        if scope == "operator" and not session.operator:
            return view.render("error.html", 404, title="Not found", message="No such page.")
        try:
            return await handler(view)
        except NotFoundPage as exc:
            return view.render("error.html", 404, title="Not found", message=str(exc))

    return handle


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No caching of console pages, a strict CSP, no framing, no referrer leaks."""
    response: web.StreamResponse = await handler(request)
    if request.path.startswith("/console"):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.path.startswith("/console/static"):
            response.headers.setdefault("Cache-Control", "no-store")
    return response
