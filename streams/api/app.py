"""aiohttp application factory: ``/metrics``, ``/healthz`` and ``/connectors``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.metrics import Metrics
from streams.runner import ConnectorRunner

METRICS = web.AppKey("metrics", Metrics)
RUNNER = web.AppKey("runner", ConnectorRunner)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Serve every callstream metric in the Prometheus text format."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Tell load balancers the process is serving."""
    return web.json_response({"status": "ok"})


@routes.get("/connectors")
async def connectors(request: web.Request) -> web.Response:
    """List every running connector with its state and last error (no secrets)."""
    runner = request.app[RUNNER]
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


def create_app(metrics: Metrics, runner: ConnectorRunner) -> web.Application:
    """Build the HTTP application around the running service's parts."""
    app = web.Application()
    app[METRICS] = metrics
    app[RUNNER] = runner
    app.add_routes(routes)
    return app
