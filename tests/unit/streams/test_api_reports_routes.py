"""The report routes resolve without shadowing: GET /v1/reports/{id} leaves other methods and
the literal path beside it (POST /v1/reports/email-me) to its own route."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from streams.api import reports
from streams.api.app import ROUTE_GROUPS


async def _handler_name(app: web.Application, method: str, path: str) -> str:
    match = await app.router.resolve(make_mocked_request(method, path, app=app))
    handler = match.handler
    return (
        getattr(handler, "__name__", repr(handler))
        if match.http_exception is None
        else str(match.http_exception.status)
    )


async def test_email_me_is_not_shadowed_by_the_download_route() -> None:
    assert reports.routes in ROUTE_GROUPS
    app = web.Application()
    for op in reports.routes.operations:  # registered first: the worst case for shadowing
        app.router.add_route(op.method, op.path, op.handler)  # type: ignore[arg-type]
    assert await _handler_name(app, "POST", "/v1/reports/email-me") == "email_me"
    assert await _handler_name(app, "GET", "/v1/reports/rpt_x") == "download_report"
    assert await _handler_name(app, "GET", "/v1/reports") == "list_reports"
    assert await _handler_name(app, "GET", "/v1/reports/rpt_x/link") == "get_report_link"
    assert await _handler_name(app, "DELETE", "/v1/reports/rpt_x") == "405"
