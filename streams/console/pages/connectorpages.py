"""The pages Data Import and Data Export share: one :class:`ConnectorSection` per section.

A connector section lists the tenant's connectors as cards and gives each one a form, Test
connection (the ``tests`` API before saving, ``{item}/test`` after), a settings form saved as a
merge patch and a delete confirmation. The sections differ only in their API paths, the path
parameter that names a connector, their URL prefix, their templates folder, their inputs and
their messages; :meth:`ConnectorSection.register` adds the shared handlers to a section's
:class:`~streams.console.core.Pages`, and the section module adds what is its own.

The section's templates folder holds ``list.html`` (context ``page``), ``new.html``
(``specs``, ``values``, ``errors``, ``failure``, ``report``), ``detail.html`` (those of
``new.html`` and ``connector``) and ``delete.html`` (``connector``); ``connector/probe.html``
(``failure``, ``report``) is shared, and ``connector/new.html`` and ``connector/detail.html``
are the layouts the sections' forms extend. Every page also gets ``url`` (the section's URL
prefix) and ``pin`` (the selector of the host-key input that the report's "Pin this key"
button fills in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View
from streams.console.forms import Input, body_of, submitted, values_of
from streams.console.pages.stores import SWITCHES, connection_body, credential_of, for_type


@dataclass(frozen=True)
class ConnectorSection:
    """One connector section: where its pages, API and templates are, and what it says.

    ``api`` is the collection (``/v1/connectors``), ``tests`` the unsaved-connector test
    (``/v1/connector-tests``), ``param`` the name of the connector id in both the API's item
    path (``{api}/{param}``) and the console's (``{url}/{param}``). ``member`` is the body
    member holding the connection (``store`` or ``config``). ``noun`` starts every flash message
    ("Connector" → "Connector x is saved."); ``created`` ends the one after creating.
    ``defaults`` are the new form's starting values beyond type, port, folder and credential.
    """

    url: str
    api: str
    tests: str
    param: str
    templates: str
    member: str
    create: Sequence[Input]
    edit: Sequence[Input]
    noun: str
    created: str = "is saved."
    defaults: Mapping[str, str] = field(default_factory=dict)

    @property
    def item(self) -> str:
        """The API path of one connector, with its ``{param}`` placeholder."""
        return f"{self.api}/{{{self.param}}}"

    @property
    def pin(self) -> str:
        """The selector of the host-key input (the id ``inputs`` gives ``member.host_key``)."""
        return f"#{self.member}-host_key"

    def register(self, pages: Pages) -> None:
        """Add the shared handlers to ``pages``, fixed paths before ``{param}`` ones."""
        one = f"{self.url}/{{{self.param}}}"
        pages.get(self.url)(self.cards)
        pages.get(f"{self.url}/new")(self.new_form)
        pages.post(f"{self.url}/new")(self.create_connector)
        pages.post(f"{self.url}/test")(self.test_new)
        pages.get(one)(self.detail_page)
        pages.post(one)(self.save)
        pages.post(f"{one}/test")(self.test_saved)
        pages.get(f"{one}/delete")(self.confirm_delete)
        pages.post(f"{one}/delete")(self.delete)

    def connector_id(self, view: View) -> str:
        """The connector id in the page's URL."""
        return view.request.match_info[self.param]

    async def fetch(self, view: View, connector_id: str) -> Any:
        """The connector (the API's 404 becomes the console's)."""
        return await view.api("GET", self.item, params={self.param: connector_id})

    def _render(self, view: View, name: str, status: int = 200, **context: Any) -> web.Response:
        """Render ``name`` (``new.html``: the section's; ``connector/new.html``: the shared one)."""
        path = name if "/" in name else f"{self.templates}/{name}"
        return view.render(path, status, url=self.url, pin=self.pin, **context)

    def _new(
        self,
        view: View,
        values: dict[str, Any],
        *,
        failure: ApiFailure | None = None,
        report: Any = None,
        status: int = 200,
    ) -> web.Response:
        return self._render(
            view,
            "new.html",
            status,
            specs=self.create,
            values=values,
            errors=failure.errors if failure else {},
            failure=failure,
            report=report,
        )

    async def detail(
        self,
        view: View,
        connector_id: str,
        *,
        report: Any = None,
        failure: ApiFailure | None = None,
        values: dict[str, Any] | None = None,
        status: int = 200,
    ) -> web.Response:
        """The connector's page: its facts, its settings form (``values`` when re-showing a
        refused submission, else the saved ones), ``report`` and ``failure`` beside them."""
        found = await self.fetch(view, connector_id)
        data = found.model_dump(mode="json")
        shown = values_of(data, self.edit) if values is None else values
        if found.type == "sftp":
            shown.setdefault("credential", credential_of(data["secrets"], self.member))
        return self._render(
            view,
            "detail.html",
            status,
            connector=found,
            specs=for_type(self.edit, found.type),
            values=shown | {"type": found.type},
            errors=failure.errors if failure else {},
            failure=failure,
            report=report,
        )

    async def cards(self, view: View) -> web.StreamResponse:
        """Every connector of the tenant as a card (``?after=`` pages on)."""
        page = await view.api(
            "GET", self.api, query={"limit": "500", "cursor": view.request.query.get("after")}
        )
        return self._render(view, "list.html", page=page)

    async def new_form(self, view: View) -> web.StreamResponse:
        """The empty form of a new connector (``?type=s3`` preselects the type)."""
        m = self.member
        start = {"type": view.request.query.get("type", "sftp"), "credential": "password"}
        return self._new(view, start | {f"{m}.port": "22", f"{m}.root": "/", **self.defaults})

    async def create_connector(self, view: View) -> web.StreamResponse:
        """Save the new connector and go to its page; a refusal re-shows the form."""
        body = connection_body(view, self.create, self.member)
        try:
            created = await view.api("POST", self.api, body=body)
        except ApiFailure as failure:
            values = submitted(view.posted, self.create)
            return self._new(view, values, failure=failure, status=failure.status)
        return await view.redirect(
            f"{self.url}/{created.id}", f"{self.noun} {created.name} {self.created}"
        )

    async def test_new(self, view: View) -> web.StreamResponse:
        """Test the connector in the form without saving it (htmx: only the report)."""
        failure = None
        report = None
        try:
            body = connection_body(view, self.create, self.member)
            report = await view.api("POST", self.tests, body=body)
        except ApiFailure as exc:
            failure = exc
        if view.htmx:
            return self._probe(view, failure, report)
        values = submitted(view.posted, self.create)
        return self._new(view, values, failure=failure, report=report)

    def _probe(self, view: View, failure: ApiFailure | None, report: Any) -> web.Response:
        return self._render(view, "connector/probe.html", failure=failure, report=report)

    async def detail_page(self, view: View) -> web.StreamResponse:
        """One connector: its facts, its settings to edit, Test connection, delete."""
        return await self.detail(view, self.connector_id(view))

    async def save(self, view: View) -> web.StreamResponse:
        """Save changes (a merge patch: empty secrets keep their value; the type is fixed)."""
        connector_id = self.connector_id(view)
        current = await self.fetch(view, connector_id)
        patch = body_of(dict(view.posted) | {"type": current.type}, self.edit, SWITCHES)
        patch["enabled"] = view.posted.get("enabled") == "true"
        try:
            saved = await view.api(
                "PATCH", self.item, params={self.param: connector_id}, body=patch
            )
        except ApiFailure as failure:
            values = submitted(view.posted, self.edit)
            return await self.detail(
                view, connector_id, failure=failure, values=values, status=failure.status
            )
        return await view.redirect(f"{self.url}/{saved.id}", f"{self.noun} {saved.name} is saved.")

    async def test_saved(self, view: View) -> web.StreamResponse:
        """Test the saved connector, step by step (htmx: only the report)."""
        connector_id = self.connector_id(view)
        report = await view.api("POST", self.item + "/test", params={self.param: connector_id})
        if view.htmx:
            return self._probe(view, None, report)
        return await self.detail(view, connector_id, report=report)

    async def confirm_delete(self, view: View) -> web.StreamResponse:
        """Ask before deleting."""
        found = await self.fetch(view, self.connector_id(view))
        return self._render(view, "delete.html", connector=found)

    async def delete(self, view: View) -> web.StreamResponse:
        """Delete the connector (it stops at once) and go back to the cards."""
        connector_id = self.connector_id(view)
        found = await self.fetch(view, connector_id)
        try:
            await view.api("DELETE", self.item, params={self.param: connector_id})
        except ApiFailure as failure:
            return await self.detail(view, connector_id, failure=failure, status=failure.status)
        return await view.redirect(self.url, f"{self.noun} {found.name} is deleted.")
