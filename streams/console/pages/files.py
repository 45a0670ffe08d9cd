"""Files & dead letters: the file versions the connectors announced (``GET /v1/files``) with
their outcome, and the dead letters (``GET /v1/dead-letters``) grouped by reason, to replay
(``POST /v1/dead-letters/replay``) by selection or "all open ones of this reason"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from streams.console.core import ApiFailure, Pages, View

pages = Pages("files")

FILE_FILTERS = ("connector", "outcome")
LETTER_FILTERS = ("reason", "status")
OUTCOMES = (
    ("", "Any outcome"),
    ("pending", "Pending"),
    ("processing", "Processing"),
    ("processed", "Processed"),
    ("partial", "Partial"),
    ("invalid", "Invalid"),
    ("incomplete", "Incomplete"),
)
STATUSES = (("open", "Open"), ("replayed", "Replayed"), ("", "Open or replayed"))
SHOWN_FAILURES = 3
"""How many failed dead letters the replay's flash message names."""


def _chosen(query: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {n: query[n].strip() for n in names if query.get(n, "").strip()}


def _page_query(filters: Mapping[str, str], cursor: str | None) -> dict[str, str]:
    query = dict(filters) | {"limit": "50"}
    if cursor:
        query["cursor"] = cursor
    return query


def replay_summary(result: Any) -> str:
    """One line saying what a replay did (the flash message)."""
    text = f"Replay: {result.replayed} replayed, {result.failed} failed, {result.skipped} skipped."
    failed = [i for i in result.items if i.outcome == "failed"]
    if failed:
        named = "; ".join(f"{i.id}: {i.reason} ({i.message})" for i in failed[:SHOWN_FAILURES])
        more = len(failed) - SHOWN_FAILURES
        text += f" Still open: {named}" + (f" and {more} more." if more > 0 else ".")
    skipped = [i for i in result.items if i.outcome == "not_replayable"]
    if skipped:
        text += " Whole-file rejections cannot be replayed: upload the file again."
    if not result.items:
        text = "Nothing to replay: no open dead letter matched."
    return text


@pages.get("/console/files")
async def files_and_dead_letters(view: View) -> web.StreamResponse:
    """Recent file versions, then the dead letters grouped by reason with replay."""
    query = view.request.query
    file_filters = _chosen(query, FILE_FILTERS)
    letter_filters = _chosen(query, LETTER_FILTERS)
    if "status" not in query:
        letter_filters["status"] = "open"
    shown_status = query.get("status", "open")
    failure = None
    files = letters = None
    try:
        files = await view.api(
            "GET", "/v1/files", query=_page_query(file_filters, query.get("files_after"))
        )
        letters = await view.api(
            "GET", "/v1/dead-letters", query=_page_query(letter_filters, query.get("dl_after"))
        )
    except ApiFailure as exc:
        failure = exc
    here = file_filters | letter_filters | {"status": shown_status}
    groups: dict[str, list[Any]] = {}
    for letter in letters.items if letters is not None else []:
        groups.setdefault(letter.reason, []).append(letter)
    return view.render(
        "files/list.html",
        failure.status if failure else 200,
        files=files,
        letters=letters,
        groups=groups,
        filters=here,
        errors=failure.errors if failure else {},
        failure=failure,
        outcomes=OUTCOMES,
        statuses=STATUSES,
        files_next=_next("files_after", files, here),
        letters_next=_next("dl_after", letters, here),
    )


def _next(name: str, page: Any, filters: Mapping[str, str]) -> str | None:
    """The link of a list's next page, keeping the filters."""
    if page is None or not page.next_cursor:
        return None
    return "/console/files?" + urlencode(dict(filters) | {name: page.next_cursor})


@pages.post("/console/files/replay")
async def replay(view: View) -> web.StreamResponse:
    """Replay the selected dead letters, or every open one of a reason ("reason" button)."""
    reason = view.field("reason")
    ids = [i.strip() for i in view.posted.getall("ids", []) if isinstance(i, str) and i.strip()]
    back = "/console/files"
    if reason:
        body: dict[str, Any] = {"reason": reason}
    elif ids:
        body = {"ids": ids}
    else:
        return await view.redirect(back, "Select dead letters to replay first.")
    try:
        result = await view.api("POST", "/v1/dead-letters/replay", body=body)
    except ApiFailure as failure:
        return await view.redirect(back, f"Replay refused: {failure.detail}")
    return await view.redirect(back, replay_summary(result))
