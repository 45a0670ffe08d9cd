"""Jobs & Pipelines: the tenant's jobs (``/v1/jobs``) as a table, the "+ New job" form, and
each job's actions: run now (``/trigger``), disable or enable, delete (after a confirmation page).

The form's type (data import or data export), frequency, end and report range are switches
(:mod:`streams.console.forms`): only the inputs of the current choices are shown and sent. The
connectors offered are the tenant's own, read through ``/v1/connectors`` (imports) and
``/v1/export-connectors`` (exports); the API still checks each one belongs to the tenant.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input, body_of, submitted, when
from streams.exports.report import BASE_COLUMNS
from streams.schedule import WEEKDAYS

pages = Pages("jobs")

SWITCHES = ("type", "frequency", "ends", "range")
EXECUTION_ID = re.compile(r"^exe_[A-Za-z0-9_-]{1,60}$")
EXPORTS = when(type="data_export")

TYPE = Input(
    "type",
    "Type",
    "select",
    options=(
        ("data_export", "Data export (build and deliver a report)"),
        ("data_import", "Data import"),
    ),
    body=False,
)
IMPORT_CONNECTOR = Input(
    "import_connector",
    "Import connector",
    "select",
    body=False,
    when=when(type="data_import"),
    hint="The connector whose files this job picks up at its times.",
)
SCHEDULE = [
    Input(
        "frequency",
        "Frequency",
        "select",
        options=(
            ("daily", "Daily"),
            ("weekly", "Weekly"),
            ("monthly", "Monthly"),
            ("one_time", "One time"),
        ),
        body=False,
    ),
    Input(
        "weekday",
        "Day of the week",
        "select",
        options=tuple((d, d.capitalize()) for d in WEEKDAYS),
        when=when(frequency="weekly"),
    ),
    Input(
        "day_of_month",
        "Day of the month",
        "number",
        when=when(frequency="monthly"),
        hint="1 to 31 (29-31: the last day of shorter months).",
    ),
    Input("time", "Time of day", "time", required=True, hint="24-hour, in the time zone below."),
    Input(
        "timezone",
        "Time zone",
        hint="An IANA name, e.g. Europe/Berlin. Empty: your tenant's time zone.",
    ),
    Input("start_date", "Start date", "date", hint="Empty: today."),
    Input(
        "ends",
        "Ends",
        "select",
        options=(("never", "Never"), ("on", "On a date")),
        body=False,
        when=when(frequency="daily weekly monthly"),
    ),
    Input(
        "end_date",
        "End date",
        "date",
        when=when(frequency="daily weekly monthly", ends="on"),
        hint="The last day it runs.",
    ),
]
REPORT = [
    Input(
        "report.profile",
        "Quality profile",
        when=EXPORTS,
        hint="A profile id. Empty: every profile.",
    ),
    Input(
        "range",
        "Date range",
        "select",
        options=(
            ("previous_day", "The previous day"),
            ("last_7_days", "The last 7 days"),
            ("last_30_days", "The last 30 days"),
            ("custom", "Custom"),
        ),
        body=False,
        when=EXPORTS,
        hint="Results by analysis time, in whole days before the run (job's time zone).",
    ),
    Input(
        "report.since",
        "From",
        when=when(type="data_export", range="custom"),
        hint="ISO 8601, e.g. 2026-11-01T00:00:00Z (inclusive).",
    ),
    Input(
        "report.until",
        "To",
        when=when(type="data_export", range="custom"),
        hint="ISO 8601, e.g. 2026-12-01T00:00:00Z (exclusive).",
    ),
    Input("report.agent", "Only agent", when=EXPORTS, hint="An agent id. Empty: every agent."),
    Input("report.team", "Only team", when=EXPORTS),
    Input("report.campaign", "Only campaign", when=EXPORTS),
    Input(
        "passed",
        "Outcome",
        "select",
        options=(("", "Passed and failed"), ("true", "Passed only"), ("false", "Failed only")),
        body=False,
        when=EXPORTS,
    ),
    Input(
        "report.columns",
        "Columns",
        "lines",
        when=EXPORTS,
        hint="One per line, in order. Empty: all. Known: "
        + ", ".join(BASE_COLUMNS)
        + ", and param:<parameter id>.",
    ),
    Input(
        "report.format",
        "File format",
        "select",
        options=(("csv", "CSV (UTF-8)"), ("xlsx", "Excel (.xlsx)")),
        when=EXPORTS,
    ),
]
NAME = Input("name", "Name", required=True, hint="Unique in your tenant.")
# API error paths whose input has another name here (a switch).
_RENAMED = {"report.range": "range", "report.passed": "passed", "frequency": "frequency"}


def _head(imports: list[Any]) -> list[Input]:
    """The inputs before the export connectors' checkboxes (the import connectors offered)."""
    choices = tuple((c.id, c.name) for c in imports) or (("", "No import connector yet"),)
    return [NAME, TYPE, dataclasses.replace(IMPORT_CONNECTOR, options=choices)]


def _body(view: View, specs: list[Input]) -> dict[str, Any]:
    """The JSON body of POST /v1/jobs from the submitted form."""
    form = view.posted
    body = body_of(form, specs, SWITCHES)
    kind = view.field("type") or "data_export"
    body["type"] = kind
    body["frequency"] = view.field("frequency") or "daily"
    if kind == "data_import":
        body["connectors"] = (
            [view.field("import_connector")] if view.field("import_connector") else []
        )
    else:
        body["connectors"] = [str(v) for v in form.getall("export_connectors", [])]
        report = body.setdefault("report", {})
        report["range"] = view.field("range") or "previous_day"
        if view.field("passed") in ("true", "false"):
            report["passed"] = view.field("passed") == "true"
    return body


async def _connectors(view: View) -> tuple[list[Any], list[Any]]:
    """The tenant's import and export connectors (first 500 of each)."""
    imports = await view.api("GET", "/v1/connectors", query={"limit": "500"})
    exports = await view.api("GET", "/v1/export-connectors", query={"limit": "500"})
    return list(imports.items), list(exports.items)


async def _new_form(
    view: View,
    values: dict[str, Any],
    chosen: list[str],
    *,
    failure: ApiFailure | None = None,
    status: int = 200,
) -> web.Response:
    imports, exports = await _connectors(view)
    errors = {_RENAMED.get(k, k): v for k, v in (failure.errors if failure else {}).items()}
    return view.render(
        "jobs/new.html",
        status,
        head=_head(imports),
        schedule=SCHEDULE,
        report=REPORT,
        exports=exports,
        chosen=chosen,
        values=values,
        errors=errors,
        failure=failure,
    )


def schedule_text(job: Any) -> str:
    """``Daily at 06:00 (Europe/Berlin)``, ``Weekly on Monday at ...``, ``Once on ... at ...``."""
    at = f"at {job.time} ({job.timezone})"
    if job.frequency == "weekly":
        text = f"Weekly on {str(job.weekday).capitalize()} {at}"
    elif job.frequency == "monthly":
        text = f"Monthly on day {job.day_of_month} {at}"
    elif job.frequency == "one_time":
        return f"Once on {job.start_date} {at}"
    else:
        text = f"Daily {at}"
    return text + (f", until {job.end_date}" if job.end_date else "")


async def connector_names(view: View) -> dict[str, str]:
    """The names of the tenant's import and export connectors, by id."""
    imports, exports = await _connectors(view)
    return {c.id: c.name for c in [*imports, *exports]}


@pages.get("/console/jobs")
async def job_table(view: View) -> web.StreamResponse:
    """The tenant's jobs: name, type, connectors, created by, schedule, status, actions."""
    page = await view.api(
        "GET", "/v1/jobs", query={"limit": "100", "cursor": view.request.query.get("after")}
    )
    names = await connector_names(view)
    started = view.request.query.get("started", "")
    return view.render(
        "jobs/list.html",
        page=page,
        names=names,
        schedule_text=schedule_text,
        started=started if EXECUTION_ID.match(started) else None,
    )


@pages.get("/console/jobs/new")
async def new_job(view: View) -> web.StreamResponse:
    """The empty form of a new job (``?type=data_import`` preselects the type)."""
    kind = view.request.query.get("type", "data_export")
    defaults = {
        "type": kind if kind in ("data_import", "data_export") else "data_export",
        "frequency": "daily",
        "time": "02:30",
        "ends": "never",
        "range": "previous_day",
        "report.format": "csv",
    }
    return await _new_form(view, defaults, [])


@pages.post("/console/jobs/new")
async def create_job(view: View) -> web.StreamResponse:
    """Save the new job; it first runs at its next occurrence."""
    imports, _ = await _connectors(view)
    specs = [*_head(imports), *SCHEDULE, *REPORT]
    try:
        created = await view.api("POST", "/v1/jobs", body=_body(view, specs))
    except ApiFailure as failure:
        chosen = [str(v) for v in view.posted.getall("export_connectors", [])]
        return await _new_form(
            view, submitted(view.posted, specs), chosen, failure=failure, status=failure.status
        )
    return await view.redirect("/console/jobs", f"Job {created.name} is saved.")


def _job_id(view: View) -> str:
    return view.request.match_info["job_id"]


@pages.post("/console/jobs/{job_id}/trigger")
async def trigger_job(view: View) -> web.StreamResponse:
    """Run the job now; the list then links to the run in the execution history."""
    job = await view.api("GET", "/v1/jobs/{job_id}", params={"job_id": _job_id(view)})
    try:
        run = await view.api("POST", "/v1/jobs/{job_id}/trigger", params={"job_id": job.id})
    except ApiFailure as failure:
        return await view.redirect("/console/jobs", f"Job {job.name} did not start: {failure}")
    return await view.redirect(
        f"/console/jobs?started={run.id}", f"Job {job.name} is running (run {run.id})."
    )


@pages.post("/console/jobs/{job_id}/disable")
async def disable_job(view: View) -> web.StreamResponse:
    """Pause the job: it does not run until enabled."""
    job = await view.api("POST", "/v1/jobs/{job_id}/disable", params={"job_id": _job_id(view)})
    return await view.redirect("/console/jobs", f"Job {job.name} is disabled.")


@pages.post("/console/jobs/{job_id}/enable")
async def enable_job(view: View) -> web.StreamResponse:
    """Resume the job from its next occurrence (missed runs are not caught up)."""
    job = await view.api("POST", "/v1/jobs/{job_id}/enable", params={"job_id": _job_id(view)})
    return await view.redirect("/console/jobs", f"Job {job.name} is enabled.")


@pages.get("/console/jobs/{job_id}/delete")
async def confirm_delete(view: View) -> web.StreamResponse:
    """Ask before deleting."""
    job = await view.api("GET", "/v1/jobs/{job_id}", params={"job_id": _job_id(view)})
    return view.render("jobs/delete.html", job=job)


@pages.post("/console/jobs/{job_id}/delete")
async def delete_job(view: View) -> web.StreamResponse:
    """Delete the job; its runs stay in the execution history."""
    job = await view.api("GET", "/v1/jobs/{job_id}", params={"job_id": _job_id(view)})
    await view.api("DELETE", "/v1/jobs/{job_id}", params={"job_id": job.id})
    return await view.redirect("/console/jobs", f"Job {job.name} is deleted.")
