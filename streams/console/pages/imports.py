"""Data Import: the tenant's import connectors (``/v1/connectors``) as cards, their forms, and
Test connection (``/v1/connector-tests`` before saving, ``/v1/connectors/{id}/test`` after).

The shared pages are :class:`~streams.console.pages.connectorpages.ConnectorSection`'s; this
module adds the inputs (connection under ``store``, parsing under ``ingest``, polling) and
the SFTP key-pair action.
"""

from __future__ import annotations

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input
from streams.console.pages.connectorpages import ConnectorSection
from streams.console.pages.stores import connection_inputs, type_input

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


SECTION = ConnectorSection(
    url="/console/import",
    api="/v1/connectors",
    tests="/v1/connector-tests",
    param="id",
    templates="import",
    member="store",
    create=CREATE,
    edit=EDIT,
    noun="Connector",
    created="is saved and starts polling.",
    defaults={"ingest.format": "auto", "ingest.default_channel": "voice"},
)
SECTION.register(pages)


@pages.post("/console/import/{id}/keypair")
async def generate_keypair(view: View) -> web.StreamResponse:
    """Give an SFTP connector a new key pair; the page then shows its public key."""
    connector_id = view.request.match_info["id"]
    try:
        await view.api("POST", "/v1/connectors/{id}/keypair", params={"id": connector_id})
    except ApiFailure as failure:
        return await SECTION.detail(view, connector_id, failure=failure, status=failure.status)
    return await view.redirect(
        f"/console/import/{connector_id}",
        "A new key pair is generated: install its public key on the server.",
    )
