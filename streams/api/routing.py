"""Typed API routes: one declaration gives the aiohttp route, its checks and its OpenAPI entry.

A resource module declares its operations on an :class:`ApiRoutes`::

    routes = ApiRoutes("connectors", "Import connectors of the caller's tenant.")

    @routes.post("/v1/connectors", summary="Create a connector", body=ConnectorIn,
                 response=ConnectorOut, status=201, errors=(409,))
    async def create(call: Call) -> ConnectorOut:
        ...

Contract of every operation, enforced here and not in handlers:

- **auth** ``"tenant"`` (default): a valid, active API key of an enabled tenant; ``call.tenant``
  is the key's tenant and every query the handler makes is filtered by it. A path parameter
  named ``{tenant}`` must equal the caller's tenant, else 404. ``"operator"``: the operator
  token. ``"public"``: nobody is asked. Missing, malformed, unknown or revoked credentials, or a
  tenant key on an operator route: 401.
- **query** and **body** are validated by the declared pydantic models before the handler runs;
  failures are 422 with each field's path (``query.limit``, ``store.port``). A body must be JSON
  (415 otherwise) and at most ``api.max_body_bytes`` (413).
- The handler returns the response model (serialised with ``mode="json"``), ``None`` for 204, or
  an aiohttp response for anything else (the docs page). It raises
  :class:`~streams.api.problems.ApiError` subclasses for errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from streams.api.problems import (
    BadRequest,
    NotFound,
    Unauthorized,
    Unprocessable,
    field_errors,
    json_body,
)

if TYPE_CHECKING:
    from streams.api.context import ApiContext

Auth = Literal["tenant", "operator", "public"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant's API key, or the operator."""

    tenant: str | None = None
    key_id: str | None = None
    operator: bool = False
    user_id: str | None = None
    """The user the API key acts for (None: a key of no user, or the operator)."""

    @property
    def actor(self) -> str:
        """How the audit trail names the caller: ``key:<id>`` or ``operator``."""
        return "operator" if self.operator else f"key:{self.key_id}"


@dataclass(slots=True)
class Call:
    """One validated API call, as a handler receives it."""

    request: web.Request
    ctx: ApiContext
    principal: Principal
    params: dict[str, str]
    body: Any = None
    query: Any = None

    @property
    def tenant(self) -> str:
        """The caller's tenant (only on ``auth="tenant"`` routes)."""
        if self.principal.tenant is None:
            raise RuntimeError("no tenant on an operator or public route")
        return self.principal.tenant


Handler = Callable[[Call], Awaitable[BaseModel | web.StreamResponse | None]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One declared API operation (see the module doc)."""

    method: Method
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "tenant"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str | None = None
    content_type: str | None = None
    """Set when the response is not JSON (the docs page: text/html)."""
    patterns: tuple[tuple[str, str], ...] = ()
    """(path parameter, regular expression) pairs the router matches: a literal path beside
    a ``{parameter}`` one (``/v1/reports/email-me`` beside ``/v1/reports/{report_id}``) then
    never answers 405 advertising the other's methods."""

    @property
    def router_path(self) -> str:
        """The path as aiohttp routes it (with the parameters' patterns)."""
        path = self.path
        for name, pattern in self.patterns:
            path = path.replace("{" + name + "}", "{" + name + ":" + pattern + "}")
        return path

    @property
    def operation_id(self) -> str:
        """A stable id for the OpenAPI document: the handler's name."""
        return self.handler.__name__

    @property
    def path_params(self) -> list[str]:
        """The names of the path's ``{parameters}``."""
        return _PARAM.findall(self.path)


@dataclass
class ApiRoutes:
    """The operations of one resource (one module under ``streams/api``)."""

    tag: str
    description: str = ""
    operations: list[Operation] = field(default_factory=list)

    def route(
        self, method: Method, path: str, *, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare the operation ``method path`` (options: see :class:`Operation`)."""

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, summary, self.tag, **options))
            return handler

        return register

    def get(self, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare a GET operation."""
        return self.route("GET", path, summary=summary, **options)

    def post(self, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare a POST operation."""
        return self.route("POST", path, summary=summary, **options)

    def put(self, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare a PUT operation."""
        return self.route("PUT", path, summary=summary, **options)

    def patch(self, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare a PATCH operation."""
        return self.route("PATCH", path, summary=summary, **options)

    def delete(self, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare a DELETE operation."""
        return self.route("DELETE", path, summary=summary, **options)


Authenticate = Callable[[web.Request, Auth], Awaitable[Principal]]


def bearer_token(request: web.Request) -> str:
    """Return the request's bearer token, or raise 401 naming what is wrong with the header."""
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    return token


def _checked_query(op: Operation, data: dict[str, Any] | None) -> Any:
    if op.query is None:
        return None
    try:
        return op.query.model_validate(data or {})
    except ValidationError as exc:
        raise Unprocessable("invalid query parameters", field_errors(exc, ("query",))) from exc


def _checked_body(op: Operation, data: Any) -> Any:
    if op.body is None:
        return None
    try:
        return op.body.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable("invalid request body", field_errors(exc)) from exc


async def _query(op: Operation, request: web.Request) -> Any:
    return _checked_query(op, dict(request.query))


async def _body(op: Operation, request: web.Request) -> Any:
    if op.body is None:
        return None
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="the body must be application/json")
    raw = await request.read()  # bounded by the application's client_max_size
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    return _checked_body(op, data)


def _respond(op: Operation, result: BaseModel | web.StreamResponse | None) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204)
    body = json_body(result.model_dump(mode="json"))
    return web.Response(status=op.status, body=body, content_type="application/json")


def handler_for(
    op: Operation, ctx: ApiContext, authenticate: Authenticate
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap ``op``'s handler with authentication, tenant scoping and validation."""

    async def handle(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request, op.auth)
        params = dict(request.match_info)
        _check_tenant(op, principal, params)
        query = await _query(op, request)
        body = await _body(op, request)
        result = await op.handler(Call(request, ctx, principal, params, body, query))
        return _respond(op, result)

    return handle


def _check_tenant(op: Operation, principal: Principal, params: dict[str, str]) -> None:
    if "tenant" in params and op.auth == "tenant" and params["tenant"] != principal.tenant:
        raise NotFound(f"no tenant {params['tenant']!r}")


async def invoke(
    op: Operation,
    ctx: ApiContext,
    request: web.Request,
    principal: Principal,
    params: dict[str, str],
    *,
    query: dict[str, Any] | None = None,
    body: Any = None,
) -> BaseModel | web.StreamResponse | None:
    """Run ``op`` in process for an already authenticated ``principal`` (the web console).

    The same contract as over HTTP: the principal must fit ``op.auth`` (else 401), the
    tenant path check, the query and body validated by the declared models (422 naming each
    field), then the handler. Raises the same errors (:class:`~streams.api.problems.ApiError`).
    """
    if op.auth == "operator" and not principal.operator:
        raise Unauthorized("this route needs the operator token")
    if op.auth == "tenant" and principal.tenant is None:
        raise Unauthorized("this route needs a tenant's API key")
    _check_tenant(op, principal, params)
    checked = Call(
        request, ctx, principal, params, _checked_body(op, body), _checked_query(op, query)
    )
    return await op.handler(checked)


def install(
    app: web.Application,
    ctx: ApiContext,
    groups: Sequence[ApiRoutes],
    authenticate: Authenticate,
) -> None:
    """Add every operation of ``groups`` to ``app``."""
    for group in groups:
        for op in group.operations:
            app.router.add_route(op.method, op.router_path, handler_for(op, ctx, authenticate))
