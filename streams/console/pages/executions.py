"""Execution History: every run of the tenant's jobs (``/v1/executions``), newest first, filtered
by type and status (a GET form: the API's ``ExecutionsQuery``), one page at a time, and one run
in detail (its files, counts, deliveries and report download links with their expiry)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.pages.jobs import connector_names

pages = Pages("executions")

TYPES = (
    ("", "Every type"),
    ("data_import", "Data import"),
    ("data_export", "Data export"),
    ("retention", "Retention"),
)
STATUSES = (
    ("", "Every status"),
    ("pending", "Pending"),
    ("processing", "Processing"),
    ("delivering", "Delivering"),
    ("success", "Success"),
    ("partial_success", "Partial success"),
    ("handler_failed", "Handler failed"),
    ("delivery_failed", "Delivery failed"),
)
FILTERS = ("type", "status", "job_id", "limit")
"""Query parameters kept from page to page (``limit``: runs per page, the API caps it)."""
PAGE_SIZE = "50"


def counts_text(run: Any) -> str:
    """What a run did, in a few words (by its type)."""
    c = run.counts
    if run.type == "data_export":
        return f"{c.rows_exported} rows exported"
    if run.type == "retention":
        return f"{c.files_purged} files purged, {c.files_archived} archived"
    return (
        f"{c.files} files, {c.rows_accepted} rows accepted, {c.rows_rejected} rejected, "
        f"{c.cases_opened} cases opened, {c.cases_updated} updated"
    )


@pages.get("/console/executions")
async def history(view: View) -> web.StreamResponse:
    """The runs, newest first, with the filters chosen (a bad filter is shown, not a 500)."""
    chosen = {k: view.request.query.get(k, "").strip() for k in FILTERS}
    query: dict[str, Any] = {k: v for k, v in chosen.items() if v}
    query |= {"limit": chosen["limit"] or PAGE_SIZE, "cursor": view.request.query.get("after")}
    failure = None
    page = None
    try:
        page = await view.api("GET", "/v1/executions", query=query)
    except ApiFailure as exc:
        failure = exc
    base = "/console/executions"
    kept = {k: v for k, v in chosen.items() if v}
    return view.render(
        "executions/list.html",
        200 if failure is None else failure.status,
        page=page,
        failure=failure,
        chosen=chosen,
        types=TYPES,
        statuses=STATUSES,
        base=base + ("?" + urlencode(kept) if kept else ""),
        counts_text=counts_text,
        names=await connector_names(view),
    )


@pages.get("/console/executions/{execution_id}")
async def run_detail(view: View) -> web.StreamResponse:
    """One run: when, status, counts, error, files, deliveries and report links."""
    run = await view.api(
        "GET",
        "/v1/executions/{execution_id}",
        params={"execution_id": view.request.match_info["execution_id"]},
    )
    return view.render(
        "executions/detail.html",
        run=run,
        counts_text=counts_text,
        names=await connector_names(view),
    )
