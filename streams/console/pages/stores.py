"""Form pieces shared by the connector sections (Data Import and Data Export).

Both sections edit an SFTP or S3 connection nested under one member of the API body
(``store`` for import connectors, ``config`` for export connectors). :func:`connection_inputs`
gives those inputs for a member, :func:`connection_body` turns a submitted "new connector"
form into the API body (type and generated key pair included) and :func:`credential_of` picks
the credential an SFTP connector's edit form starts on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.console.core import View
from streams.console.forms import Input, body_of, when

SWITCHES = ("type", "credential")
"""The form's switches: the connector type and, for SFTP, how it signs in."""

STORED_ENCRYPTED = "Stored encrypted; never shown again. Leave empty to keep the current one."


def type_input(types: tuple[tuple[str, str], ...]) -> Input:
    """The type switch (not a body member: :func:`connection_body` adds it under the member)."""
    return Input("type", "Type", "select", options=types, body=False)


def connection_inputs(member: str, *, folder_types: str, folder_hint: str) -> list[Input]:
    """The SFTP and S3 inputs under ``member`` (``store`` or ``config``).

    ``folder_types`` names the types whose ``root`` input shows (e.g. ``"sftp local"``).
    """
    m = member
    return [
        Input(f"{m}.host", "Host", when=when(type="sftp"), hint="Server name or address."),
        Input(f"{m}.port", "Port", "number", when=when(type="sftp"), hint="Usually 22."),
        Input(f"{m}.username", "Username", when=when(type="sftp")),
        Input(
            "credential",
            "Sign in with",
            "select",
            options=(
                ("password", "A password"),
                ("generate", "A key pair callstream generates (you install its public key)"),
                ("private_key", "My own private key"),
            ),
            body=False,
            when=when(type="sftp"),
        ),
        Input(
            f"{m}.password",
            "Password",
            "password",
            secret=True,
            when=when(type="sftp", credential="password"),
            hint=STORED_ENCRYPTED,
        ),
        Input(
            f"{m}.private_key",
            "Private key (OpenSSH or PEM)",
            "textarea",
            secret=True,
            when=when(type="sftp", credential="private_key"),
        ),
        Input(
            f"{m}.private_key_passphrase",
            "Key passphrase",
            "password",
            secret=True,
            when=when(type="sftp", credential="private_key"),
        ),
        Input(
            f"{m}.host_key",
            "Host key",
            when=when(type="sftp"),
            empty="",
            hint="The server's public key line or its SHA256 fingerprint. Leave empty and run "
            "Test connection: it shows the key the server presents, to check and pin.",
        ),
        Input(f"{m}.root", "Folder", when=when(type=folder_types), hint=folder_hint),
        Input(f"{m}.bucket", "Bucket", when=when(type="s3")),
        Input(f"{m}.region", "Region", when=when(type="s3"), hint="e.g. eu-west-1"),
        Input(f"{m}.prefix", "Prefix", when=when(type="s3"), hint="Keys under it, e.g. in/"),
        Input(f"{m}.access_key_id", "Access key id", when=when(type="s3")),
        Input(
            f"{m}.secret_access_key",
            "Secret access key",
            "password",
            secret=True,
            when=when(type="s3"),
            hint=STORED_ENCRYPTED,
        ),
        Input(
            f"{m}.endpoint_url",
            "Endpoint URL",
            when=when(type="s3"),
            hint="Only for S3-compatible stores (MinIO, GCS interoperability).",
        ),
    ]


def connection_body(view: View, specs: Iterable[Input], member: str) -> dict[str, Any]:
    """The API body of a submitted new-connector form: the inputs that apply, the type under
    ``member``, and ``generate_keypair`` when an SFTP connector asks for a generated key."""
    body = body_of(view.posted, specs, SWITCHES)
    kind = view.field("type") or "sftp"
    body.setdefault(member, {})["type"] = kind
    if kind == "sftp" and view.field("credential") == "generate":
        body["generate_keypair"] = True
    return body


def credential_of(secrets: Mapping[str, bool], member: str) -> str:
    """The credential a saved SFTP connector signs in with (its edit form's starting choice)."""
    return "private_key" if secrets.get(f"{member}.private_key") else "password"


def for_type(specs: Iterable[Input], kind: str) -> list[Input]:
    """The inputs that can apply to a saved connector of type ``kind`` (its edit form has no
    type switch, so the others are left out rather than hidden)."""
    return [s for s in specs if "type" not in s.when or kind in s.when["type"]]
