"""Data Export: the tenant's export connectors (``/v1/export-connectors``) as cards, their
forms, and Test connection (``/v1/export-connector-tests`` before saving,
``/v1/export-connectors/{connector_id}/test`` after).

The body is ``{"name", "enabled", "config": {...}}``: inputs are named ``config.host`` and so
on (the SFTP and S3 inputs are Data Import's, :mod:`streams.console.pages.stores`). An SFTP
test writes a probe file into the remote folder and deletes it; an e-mail test checks the
relay without sending mail. The pages are
:class:`~streams.console.pages.connectorpages.ConnectorSection`'s.
"""

from __future__ import annotations

from streams.console.core import Pages
from streams.console.forms import Input, when
from streams.console.pages.connectorpages import ConnectorSection
from streams.console.pages.stores import connection_inputs, type_input

pages = Pages("export")

TYPES = (("sftp", "SFTP server"), ("s3", "S3 bucket (or GCS, MinIO)"), ("email", "E-mail"))

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


SECTION = ConnectorSection(
    url="/console/export",
    api="/v1/export-connectors",
    tests="/v1/export-connector-tests",
    param="connector_id",
    templates="export",
    member="config",
    create=CREATE,
    edit=EDIT,
    noun="Export connector",
)
SECTION.register(pages)
