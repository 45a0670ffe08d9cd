"""Data Export: the tenant's export connectors (``/v1/export-connectors``) as cards, their
forms, and Test connection (``/v1/export-connector-tests`` before saving,
``/v1/export-connectors/{connector_id}/test`` after).

The body is ``{"name", "enabled", "config": {...}}``: inputs are named ``config.host`` and so
on (the SFTP and S3 inputs are Data Import's, :mod:`streams.console.pages.stores`). An SFTP
test writes a probe file into the remote folder and deletes it; an e-mail test checks the
relay without sending mail.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input, body_of, submitted, values_of, when
from streams.console.pages.stores import (
    SWITCHES,
    connection_body,
    connection_inputs,
    credential_of,
    for_type,
    type_input,
)

pages = Pages("export")

TYPES = (("sftp", "SFTP server"), ("s3", "S3 bucket (or GCS, MinIO)"), ("email", "E-mail"))
PATH = "/v1/export-connectors/{connector_id}"

NAME = Input(
    "name", "Name", required=True, hint="Unique in your tenant: letters, digits, '-' and '_'."
)
CONFIG = [
    *connection_inputs(
        "config", folder_types="sftp", folder_hint="The remote directory reports are written to."
    ),
    Input(
        "config.to",
        "Recipients",
        "lines",
        when=when(type="email"),
        hint="One address a line (up to 20): each export mails them its download links.",
    ),
]
CREATE = [NAME, type_input(TYPES), *CONFIG]
EDIT = [*CONFIG, Input("enabled", "Enabled (receives exports)", "checkbox")]


def _form(
    view: View,
    values: dict[str, Any],
    *,
    failure: ApiFailure | None = None,
    report: Any = None,
    status: int = 200,
) -> web.Response:
    return view.render(
        "export/new.html",
        status,
        specs=CREATE,
        values=values,
        errors=failure.errors if failure else {},
        failure=failure,
        report=report,
    )


def _probe(view: View, failure: ApiFailure | None, report: Any) -> web.Response:
    return view.render("export/probe.html", failure=failure, report=report)


@pages.get("/console/export")
async def connector_cards(view: View) -> web.StreamResponse:
    """Every export connector of the tenant as a card: type, where it delivers, enabled."""
    page = await view.api(
        "GET",
        "/v1/export-connectors",
        query={"limit": "500", "cursor": view.request.query.get("after")},
    )
    return view.render("export/list.html", page=page)


@pages.get("/console/export/new")
async def new_connector(view: View) -> web.StreamResponse:
    """The empty form of a new export connector (``?type=email`` preselects the type)."""
    kind = view.request.query.get("type", "sftp")
    return _form(
        view, {"type": kind, "config.port": "22", "config.root": "/", "credential": "password"}
    )


@pages.post("/console/export/new")
async def create_connector(view: View) -> web.StreamResponse:
    """Save the new export connector."""
    try:
        created = await view.api(
            "POST", "/v1/export-connectors", body=connection_body(view, CREATE, "config")
        )
    except ApiFailure as failure:
        return _form(view, submitted(view.posted, CREATE), failure=failure, status=failure.status)
    return await view.redirect(
        f"/console/export/{created.id}", f"Export connector {created.name} is saved."
    )


@pages.post("/console/export/test")
async def test_new_connector(view: View) -> web.StreamResponse:
    """Test the export connector in the form without saving it (htmx: only the report)."""
    failure = None
    report = None
    try:
        report = await view.api(
            "POST", "/v1/export-connector-tests", body=connection_body(view, CREATE, "config")
        )
    except ApiFailure as exc:
        failure = exc
    if view.htmx:
        return _probe(view, failure, report)
    return _form(view, submitted(view.posted, CREATE), failure=failure, report=report)


async def _detail(
    view: View,
    connector_id: str,
    *,
    report: Any = None,
    failure: ApiFailure | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    found = await view.api("GET", PATH, params={"connector_id": connector_id})
    data = found.model_dump(mode="json")
    shown = values_of(data, EDIT) if values is None else values
    if found.type == "sftp":
        shown.setdefault("credential", credential_of(data["secrets"], "config"))
    return view.render(
        "export/detail.html",
        status,
        connector=found,
        specs=for_type(EDIT, found.type),
        values=shown | {"type": found.type},
        errors=failure.errors if failure else {},
        failure=failure,
        report=report,
    )


@pages.get("/console/export/{connector_id}")
async def connector_detail(view: View) -> web.StreamResponse:
    """One export connector: its settings to edit, Test connection, delete."""
    return await _detail(view, view.request.match_info["connector_id"])


@pages.post("/console/export/{connector_id}")
async def save_connector(view: View) -> web.StreamResponse:
    """Save changes (a merge patch: empty secrets keep their value)."""
    connector_id = view.request.match_info["connector_id"]
    current = await view.api("GET", PATH, params={"connector_id": connector_id})
    patch = body_of(dict(view.posted) | {"type": current.type}, EDIT, SWITCHES)
    patch["enabled"] = view.posted.get("enabled") == "true"
    try:
        saved = await view.api("PATCH", PATH, params={"connector_id": connector_id}, body=patch)
    except ApiFailure as failure:
        values = submitted(view.posted, EDIT)
        return await _detail(
            view, connector_id, failure=failure, values=values, status=failure.status
        )
    return await view.redirect(
        f"/console/export/{saved.id}", f"Export connector {saved.name} is saved."
    )


@pages.post("/console/export/{connector_id}/test")
async def test_connector(view: View) -> web.StreamResponse:
    """Test the saved export connector, step by step."""
    connector_id = view.request.match_info["connector_id"]
    report = await view.api("POST", PATH + "/test", params={"connector_id": connector_id})
    if view.htmx:
        return _probe(view, None, report)
    return await _detail(view, connector_id, report=report)


@pages.get("/console/export/{connector_id}/delete")
async def confirm_delete(view: View) -> web.StreamResponse:
    """Ask before deleting."""
    found = await view.api(
        "GET", PATH, params={"connector_id": view.request.match_info["connector_id"]}
    )
    return view.render("export/delete.html", connector=found)


@pages.post("/console/export/{connector_id}/delete")
async def delete_connector(view: View) -> web.StreamResponse:
    """Delete the export connector."""
    connector_id = view.request.match_info["connector_id"]
    found = await view.api("GET", PATH, params={"connector_id": connector_id})
    try:
        await view.api("DELETE", PATH, params={"connector_id": connector_id})
    except ApiFailure as failure:
        return await _detail(view, connector_id, failure=failure, status=failure.status)
    return await view.redirect("/console/export", f"Export connector {found.name} is deleted.")
