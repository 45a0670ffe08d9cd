"""Data Import: the tenant's import connectors (``/v1/connectors``) as cards, their forms, and
Test connection (``/v1/connector-tests`` before saving, ``/v1/connectors/{id}/test`` after)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input, body_of, submitted, values_of
from streams.console.pages.stores import (
    SWITCHES,
    connection_body,
    connection_inputs,
    credential_of,
    for_type,
    type_input,
)

pages = Pages("import")

TYPES = (("sftp", "SFTP server"), ("s3", "S3 bucket (or GCS, MinIO)"), ("local", "Local folder"))

TYPE = type_input(TYPES)
NAME = Input(
    "name", "Name", required=True, hint="Unique in your tenant: letters, digits, '-' and '_'."
)
STORE = connection_inputs(
    "store",
    folder_types="sftp local",
    folder_hint="The remote directory (SFTP) or the local folder files arrive in.",
)
PARSING = [
    Input(
        "ingest.format",
        "File format",
        "select",
        options=(
            ("auto", "By extension (.csv, .tsv, .json)"),
            ("csv", "CSV"),
            ("tsv", "TSV"),
            ("chat_json", "Chat transcripts (JSON)"),
        ),
    ),
    Input("ingest.source_system", "Source system", hint="e.g. five9, genesys, nice"),
    Input(
        "ingest.default_channel",
        "Channel",
        "select",
        options=(("voice", "Voice"), ("chat", "Chat"), ("email", "E-mail"), ("social", "Social")),
    ),
    Input("ingest.timezone", "Time zone of times without offset", hint="e.g. Europe/Berlin"),
    Input("poll.interval_seconds", "Poll every (seconds)", "number", number=float),
]
CREATE = [NAME, TYPE, *STORE, *PARSING]
EDIT = [*STORE, *PARSING, Input("enabled", "Enabled (polling)", "checkbox")]


def _create_body(view: View) -> dict[str, Any]:
    return connection_body(view, CREATE, "store")


def _new_form(
    view: View,
    values: dict[str, Any],
    *,
    failure: ApiFailure | None = None,
    report: Any = None,
    status: int = 200,
) -> web.Response:
    return view.render(
        "import/new.html",
        status,
        specs=CREATE,
        values=values,
        errors=failure.errors if failure else {},
        failure=failure,
        report=report,
    )


@pages.get("/console/import")
async def connector_cards(view: View) -> web.StreamResponse:
    """Every import connector of the tenant as a card: type, status, last poll, last error."""
    page = await view.api(
        "GET", "/v1/connectors", query={"limit": "500", "cursor": view.request.query.get("after")}
    )
    return view.render("import/list.html", page=page)


@pages.get("/console/import/new")
async def new_connector(view: View) -> web.StreamResponse:
    """The empty form of a new connector (``?type=s3`` preselects the type)."""
    kind = view.request.query.get("type", "sftp")
    defaults = {"type": kind, "store.port": "22", "store.root": "/", "ingest.format": "auto"}
    return _new_form(view, defaults | {"ingest.default_channel": "voice", "credential": "password"})


@pages.post("/console/import/new")
async def create_connector(view: View) -> web.StreamResponse:
    """Save the new connector; the runner starts it within a second."""
    try:
        created = await view.api("POST", "/v1/connectors", body=_create_body(view))
    except ApiFailure as failure:
        return _new_form(
            view, submitted(view.posted, CREATE), failure=failure, status=failure.status
        )
    return await view.redirect(
        f"/console/import/{created.id}", f"Connector {created.name} is saved and starts polling."
    )


@pages.post("/console/import/test")
async def test_new_connector(view: View) -> web.StreamResponse:
    """Test the connector in the form without saving it (htmx: only the report)."""
    failure = None
    report = None
    try:
        report = await view.api("POST", "/v1/connector-tests", body=_create_body(view))
    except ApiFailure as exc:
        failure = exc
    if view.htmx:
        return view.render("import/probe.html", failure=failure, report=report)
    return _new_form(view, submitted(view.posted, CREATE), failure=failure, report=report)


async def _detail(
    view: View,
    connector_id: str,
    *,
    report: Any = None,
    failure: ApiFailure | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    found = await view.api("GET", "/v1/connectors/{id}", params={"id": connector_id})
    data = found.model_dump(mode="json")
    shown = values_of(data, EDIT) if values is None else values
    if found.type == "sftp":
        shown.setdefault("credential", credential_of(data["secrets"], "store"))
    return view.render(
        "import/detail.html",
        status,
        connector=found,
        specs=for_type(EDIT, found.type),
        values=shown | {"type": found.type},
        errors=failure.errors if failure else {},
        failure=failure,
        report=report,
    )


@pages.get("/console/import/{id}")
async def connector_detail(view: View) -> web.StreamResponse:
    """One connector: its status, its settings to edit, Test connection, key pair, delete."""
    return await _detail(view, view.request.match_info["id"])


@pages.post("/console/import/{id}")
async def save_connector(view: View) -> web.StreamResponse:
    """Save changes (a merge patch: empty secrets keep their value)."""
    connector_id = view.request.match_info["id"]
    current = await view.api("GET", "/v1/connectors/{id}", params={"id": connector_id})
    form = dict(view.posted) | {"type": current.type}
    patch = body_of(form, EDIT, SWITCHES)
    patch["enabled"] = view.posted.get("enabled") == "true"
    try:
        saved = await view.api(
            "PATCH", "/v1/connectors/{id}", params={"id": connector_id}, body=patch
        )
    except ApiFailure as failure:
        values = submitted(view.posted, EDIT)
        return await _detail(
            view, connector_id, failure=failure, values=values, status=failure.status
        )
    return await view.redirect(f"/console/import/{saved.id}", f"Connector {saved.name} is saved.")


@pages.post("/console/import/{id}/test")
async def test_connector(view: View) -> web.StreamResponse:
    """Test the saved connector, step by step."""
    connector_id = view.request.match_info["id"]
    report = await view.api("POST", "/v1/connectors/{id}/test", params={"id": connector_id})
    if view.htmx:
        return view.render("import/probe.html", failure=None, report=report)
    return await _detail(view, connector_id, report=report)


@pages.post("/console/import/{id}/keypair")
async def generate_keypair(view: View) -> web.StreamResponse:
    """Give an SFTP connector a new key pair; the page then shows its public key."""
    connector_id = view.request.match_info["id"]
    try:
        await view.api("POST", "/v1/connectors/{id}/keypair", params={"id": connector_id})
    except ApiFailure as failure:
        return await _detail(view, connector_id, failure=failure, status=failure.status)
    return await view.redirect(
        f"/console/import/{connector_id}",
        "A new key pair is generated: install its public key on the server.",
    )


@pages.get("/console/import/{id}/delete")
async def confirm_delete(view: View) -> web.StreamResponse:
    """Ask before deleting."""
    found = await view.api(
        "GET", "/v1/connectors/{id}", params={"id": view.request.match_info["id"]}
    )
    return view.render("import/delete.html", connector=found)


@pages.post("/console/import/{id}/delete")
async def delete_connector(view: View) -> web.StreamResponse:
    """Delete the connector (it stops within a second)."""
    connector_id = view.request.match_info["id"]
    found = await view.api("GET", "/v1/connectors/{id}", params={"id": connector_id})
    try:
        await view.api("DELETE", "/v1/connectors/{id}", params={"id": connector_id})
    except ApiFailure as failure:
        return await _detail(view, connector_id, failure=failure, status=failure.status)
    return await view.redirect("/console/import", f"Connector {found.name} is deleted.")
