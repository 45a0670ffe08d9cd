"""aiohttp application factory: ``/metrics``, ``/healthz``, ``/readyz``, ``/connectors`` and the
``/v1`` API.

``/healthz`` (liveness) answers 200 while the process serves HTTP; ``/readyz`` (readiness) runs
the service's :class:`~streams.health.Readiness` checks and answers 200 only when all pass, else
503 with the failing checks named. Both are unauthenticated, like ``/metrics``, and carry no
tenant data.

``/connectors`` lists every tenant's running connectors (tenant, store, last error), so it is
the operator's alone (:func:`~streams.api.auth.operator_guard`: no or a wrong token 401, a
tenant's API key 403). It is served where the process serves the API, and in a process without
the ``api`` role only when ``api.operator_token`` is set (otherwise nobody could use it: 404).

The ``/v1`` operations are declared per resource (one module each, a ``routes`` table of
:class:`~streams.api.routing.ApiRoutes`) and listed in :data:`ROUTE_GROUPS`; the OpenAPI
document (``/v1/openapi.json``) and the docs page (``/v1/docs``) are generated from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.api import connectors as connector_api
from streams.api import (
    conversations,
    deadletters,
    dropbox,
    executions,
    files,
    jobs,
    keys,
    openapi,
    reports,
    results,
    sources,
    tenants,
    users,
)
from streams.api import destinations as destination_api
from streams.api.auth import authenticator, operator_guard
from streams.api.context import ApiContext
from streams.api.problems import Handler, problem_middleware
from streams.api.routing import ApiRoutes, Call, install
from streams.console import app as console
from streams.health import Readiness
from streams.metrics import Metrics
from streams.runner import ConnectorRunner

METRICS = web.AppKey("metrics", Metrics)
RUNNER = web.AppKey("runner", ConnectorRunner)
READINESS = web.AppKey("readiness", Readiness)

routes = web.RouteTableDef()

docs = ApiRoutes("docs", "This document and its page.")

ROUTE_GROUPS: list[ApiRoutes] = [
    tenants.routes,
    keys.routes,
    users.routes,
    connector_api.routes,
    destination_api.routes,
    sources.routes,
    conversations.routes,
    results.routes,
    reports.routes,
    files.routes,
    deadletters.routes,
    jobs.routes,
    executions.routes,
    dropbox.routes,
    docs,
]
"""Every resource's operations, in the order the document lists them."""

_DOCS_PAGE = Path(__file__).with_name("docs.html")


def _version() -> str:
    try:
        return version("callstream")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "0+unknown"


_DOCUMENT: dict[str, Any] | None = None


def document() -> dict[str, Any]:
    """Return the OpenAPI document of every route group (built once)."""
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = openapi.build(ROUTE_GROUPS, _version())
    return _DOCUMENT


@docs.get(
    "/v1/openapi.json",
    summary="This API's OpenAPI 3.1 document",
    auth="public",
    content_type="application/json",
)
async def openapi_document(_call: Call) -> web.Response:
    """Serve the OpenAPI document."""
    return web.json_response(document())


@docs.get(
    "/v1/docs", summary="A readable page of this API", auth="public", content_type="text/html"
)
async def docs_page(_call: Call) -> web.Response:
    """Serve the docs page (it renders /v1/openapi.json; no external assets)."""
    return web.Response(text=_DOCS_PAGE.read_text(encoding="utf-8"), content_type="text/html")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Serve every callstream metric in the Prometheus text format."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Tell load balancers the process is serving."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Tell load balancers whether this process can do its work: 200 when every readiness
    check passes, 503 naming the failing ones otherwise."""
    report = await request.app[READINESS].evaluate()
    return web.json_response(report.as_dict(), status=200 if report.ready else 503)


def _connectors(guard: Callable[[web.Request], Awaitable[None]]) -> Handler:
    """Return the ``/connectors`` handler, which lets only the callers ``guard`` passes in."""

    async def connectors(request: web.Request) -> web.Response:
        """List every running connector with its state and last error (no secrets)."""
        await guard(request)
        runner = request.app.get(RUNNER)
        if runner is None:  # this process does not run the connectors role
            return web.json_response({"connectors": []})
        items = [
            {
                "tenant": ctx.tenant,
                "connector": ctx.name,
                "type": ctx.settings.store.type,
                "store": ctx.store.description,
                **ctx.status.as_dict(),
            }
            for ctx in runner.contexts.values()
        ]
        return web.json_response({"connectors": items})

    return connectors


def create_app(
    metrics: Metrics,
    runner: ConnectorRunner | None,
    api: ApiContext | None = None,
    readiness: Readiness | None = None,
    *,
    serve_api: bool = True,
) -> web.Application:
    """Build the HTTP application around the running service's parts (``api``: the control
    plane, whose ``/v1`` is served when ``serve_api``; ``readiness``: the checks of /readyz,
    none: always ready). ``/connectors`` is served as the module doc says."""
    served = api if serve_api else None
    limit = served.settings.api.max_body_bytes if served is not None else 1024**2
    app = web.Application(middlewares=[problem_middleware], client_max_size=limit)
    app[METRICS] = metrics
    if runner is not None:
        app[RUNNER] = runner
    app[READINESS] = readiness or Readiness()
    app.add_routes(routes)
    if api is not None and (served is not None or api.settings.api.operator_token is not None):
        app.router.add_get("/connectors", _connectors(operator_guard(api)))
    if served is not None:
        install(app, served, ROUTE_GROUPS, authenticator(served))
        if served.settings.console.enabled:
            console.install(app, served, ROUTE_GROUPS)
    return app
