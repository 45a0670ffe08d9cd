"""Analysis: the tenant's analysis results (``GET /v1/results``) filtered by a GET form, a case
with its turns, scores, versions and lineage (``/v1/cases/{case_id}`` and ``.../lineage``), and
reports: "Email me" (``POST /v1/reports/email-me``) and the report files to download
(``GET /v1/reports``).

The API builds a report file only by "email me" or an export job: it has no "download now"
operation, so Export report lists the built files with their signed links (those "email me"
just made first) rather than building one the API does not know of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View

pages = Pages("results")

FILTERS = ("since", "profile", "agent", "team", "campaign", "passed", "case_id")
"""The list's filters: query parameters of the page and of ``GET /v1/results``."""
REPORT_FILTERS = ("profile", "agent", "team", "campaign", "passed")
"""The filters a report shares with the list."""
PERIODS = (
    ("previous_day", "Yesterday"),
    ("last_7_days", "The last 7 days"),
    ("last_30_days", "The last 30 days"),
    ("custom", "From - to (below)"),
)


def _day_start(day: str) -> str:
    """``2026-11-20`` → ``2026-11-20T00:00:00Z`` (anything else is passed on for the API to
    refuse with its reason)."""
    try:
        return dt.date.fromisoformat(day).isoformat() + "T00:00:00Z"
    except ValueError:
        return day


def filters_of(form: Mapping[str, Any]) -> dict[str, str]:
    """The non-empty filters in ``form`` (the page's query or a posted form), stripped."""
    out = {}
    for name in FILTERS:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            out[name] = value.strip()
    return out


def api_query(filters: Mapping[str, str]) -> dict[str, str]:
    """The ``GET /v1/results`` query of the page's filters (a day becomes its midnight UTC)."""
    query = dict(filters)
    if "since" in query:
        query["since"] = _day_start(query["since"])
    return query


def report_body(form: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ReportParams`` body of the posted "Email me" form."""
    body: dict[str, Any] = {
        k: v for k, v in filters_of(form).items() if k in REPORT_FILTERS and k != "passed"
    }
    passed = filters_of(form).get("passed")
    if passed is not None:
        body["passed"] = passed == "true" if passed in ("true", "false") else passed
    period = str(form.get("range", "")).strip() or "last_30_days"
    body["range"] = period
    if period == "custom":
        for name in ("from", "to"):
            value = str(form.get(name, "")).strip()
            if value:
                body["since" if name == "from" else "until"] = _day_start(value)
    body["format"] = str(form.get("format", "csv")).strip() or "csv"
    return body


async def _list(
    view: View,
    filters: dict[str, str],
    *,
    failure: ApiFailure | None = None,
    report_failure: ApiFailure | None = None,
    report_values: Mapping[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    page = None
    if failure is None:
        query = api_query(filters) | {"limit": "50"}
        after = view.request.query.get("after")
        if after:
            query["cursor"] = after
        try:
            page = await view.api("GET", "/v1/results", query=query)
        except ApiFailure as exc:
            failure, status = exc, exc.status
    return view.render(
        "results/list.html",
        status,
        page=page,
        filters=filters,
        base="/console/results" + ("?" + urlencode(filters) if filters else ""),
        failure=failure,
        errors=failure.errors if failure else {},
        report_failure=report_failure,
        report_errors=report_failure.errors if report_failure else {},
        report_values=report_values or {"range": "last_30_days", "format": "csv"},
        periods=PERIODS,
    )


@pages.get("/console/results")
async def results_list(view: View) -> web.StreamResponse:
    """The results, newest first, with the filter form, paging and the report actions."""
    return await _list(view, filters_of(view.request.query))


@pages.post("/console/results/email-me")
async def email_me(view: View) -> web.StreamResponse:
    """Mail a report of the current filters to the session's own verified address."""
    filters = filters_of(view.posted)
    try:
        sent = await view.api("POST", "/v1/reports/email-me", body=report_body(view.posted))
    except ApiFailure as failure:
        return await _list(
            view,
            filters,
            report_failure=failure,
            report_values=dict(view.posted),
            status=failure.status,
        )
    files = len(sent.reports)
    if sent.mail_sent:
        message = (
            f"A report of {sent.rows} row(s) in {files} file(s) is e-mailed to {sent.sent_to}; "
            "its files are also listed here."
        )
    else:
        message = (
            f"The report ({sent.rows} row(s), {files} file(s)) is built but not e-mailed: "
            f"{sent.mail_error}. Download it here."
        )
    return await view.redirect("/console/results/reports", message)


@pages.get("/console/results/reports")
async def report_files(view: View) -> web.StreamResponse:
    """Export report: the built report files, newest first, with their signed links."""
    query = {"limit": "50"}
    after = view.request.query.get("after")
    if after:
        query["cursor"] = after
    page = await view.api("GET", "/v1/reports", query=query)
    return view.render("results/reports.html", page=page)


@pages.get("/console/cases/{case_id}")
async def case_detail(view: View) -> web.StreamResponse:
    """One case: the conversation, its turns, the scores with evidence, versions, lineage."""
    ident = view.request.match_info["case_id"]
    case = await view.api("GET", "/v1/cases/{case_id}", params={"case_id": ident})
    lineage = await view.api("GET", "/v1/cases/{case_id}/lineage", params={"case_id": ident})
    conversation = dict(case.conversation)
    turns = conversation.pop("turns", None) or []
    metadata = conversation.pop("metadata", None) or {}
    conversation.pop("tenant", None)  # the session's own
    fields = [(k, v) for k, v in conversation.items() if v not in (None, "", [], {})]
    return view.render(
        "results/case.html",
        case=case,
        lineage=lineage,
        fields=fields,
        turns=turns,
        metadata=metadata,
    )
