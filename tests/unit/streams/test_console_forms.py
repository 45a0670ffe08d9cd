"""Console forms map to API bodies by dotted paths; sign-in never redirects off the console."""

from __future__ import annotations

import datetime as dt

from streams.console.app import _next
from streams.console.filters import label, tone, when
from streams.console.forms import Input, body_of, submitted, values_of
from streams.console.forms import when as when_

SPECS = [
    Input("name", "Name"),
    Input("type", "Type", "select", body=False),
    Input("store.host", "Host", when=when_(type="sftp")),
    Input("store.port", "Port", "number", when=when_(type="sftp")),
    Input("store.password", "Password", "password", secret=True, when=when_(type="sftp")),
    Input("store.host_key", "Host key", when=when_(type="sftp"), empty=""),
    Input("store.bucket", "Bucket", when=when_(type="s3")),
    Input("poll.interval_seconds", "Every", "number", number=float),
    Input("poll.include", "Globs", "lines"),
    Input("enabled", "Enabled", "checkbox"),
]


def test_only_the_chosen_types_inputs_reach_the_body_nested_by_path() -> None:
    form = {
        "name": " daily ",
        "type": "sftp",
        "store.host": "sftp.example.com",
        "store.port": "2222",
        "store.password": "s3cret",
        "store.host_key": "",
        "store.bucket": "sent-anyway-with-javascript-off",
        "poll.interval_seconds": "2.5",
        "poll.include": "*.csv\n\n *.tsv \n",
    }
    assert body_of(form, SPECS, ["type"]) == {
        "name": "daily",
        "store": {"host": "sftp.example.com", "port": 2222, "password": "s3cret", "host_key": ""},
        "poll": {"interval_seconds": 2.5, "include": ["*.csv", "*.tsv"]},
        "enabled": False,
    }


def test_empty_inputs_are_left_out_and_a_bad_number_goes_to_the_api_to_name() -> None:
    body = body_of({"type": "s3", "store.port": "x", "name": "  "}, SPECS, ["type"])
    assert body == {"enabled": False}
    sftp = body_of({"type": "sftp", "store.port": "twenty"}, SPECS, ["type"])
    assert sftp["store"]["port"] == "twenty"  # the API answers store.port: not an integer


def test_secrets_are_never_filled_back_in() -> None:
    stored = {
        "name": "a",
        "store": {"host": "h", "password": "**********"},
        "poll": {"include": ["*.csv", "*.tsv"]},
    }
    assert values_of(stored, SPECS) == {
        "name": "a",
        "store.host": "h",
        "poll.include": "*.csv\n*.tsv",
    }
    typed = {"name": "a", "store.password": "typed", "enabled": "true"}
    assert submitted(typed, SPECS) == {"name": "a", "enabled": True}


def test_after_sign_in_only_console_paths_are_followed() -> None:
    assert _next("/console/jobs?x=1") == "/console/jobs?x=1"
    for hostile in (
        "https://evil.example/console",
        "//evil.example/console",
        "/v1/keys",
        "/console\\@evil",
        "",
    ):
        assert _next(hostile) == "/console"


def test_statuses_read_as_text_with_a_colour_class() -> None:
    assert (label("partial_success"), tone("partial_success")) == ("Partial success", "warn")
    assert (label("handler_failed"), tone("handler_failed")) == ("Handler failed", "bad")
    assert (tone("ok"), tone("error")) == ("ok", "bad")  # a connector polling well, failing
    assert tone("something new") == "muted"
    assert when(dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)) == "2026-11-23 09:30:00 UTC"
    assert when("2026-11-23T09:30:00Z") == "2026-11-23 09:30:00 UTC"
    assert when(None) == "—"
