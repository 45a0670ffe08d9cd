"""Source schemas: validation, compatibility, versions, audit; record decisions; the API."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from streams.api import sources as sources_api
from streams.api.context import ApiContext
from streams.api.problems import Unauthorized, problem_middleware
from streams.api.routing import Auth, Principal, install
from streams.codec import AvroCodec
from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.sources import SourceField, SourceSchemaIn, get, incompatibilities, update
from streams.db import Database
from streams.ingest.sourcestore import Incoming, SourceJob, SourceStore
from streams.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics

MEMBER = [
    {"name": "id", "type": "Integer", "primary_key": True},
    {"name": "name", "type": "String"},
    {"name": "phone", "type": "String", "pii": True},
]


def body(fields: list[dict[str, Any]], name: str = "Member") -> SourceSchemaIn:
    return SourceSchemaIn.model_validate({"source_name": name, "schema": fields})


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'cs.db'}") as database:
        yield database


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ([{"name": "Id", "type": "Integer", "primary_key": True}], "schema.0.name"),
        ([{"name": "cust name", "type": "String", "primary_key": True}], "schema.0.name"),
        ([{"name": "id", "type": "integer", "primary_key": True}], "schema.0.type"),
        ([{"name": "id", "type": "Float", "primary_key": True}], "schema.0.type"),
        ([{"name": "id", "type": "Integer"}], "primary_key"),
        (
            [
                {"name": "id", "type": "Integer", "primary_key": True},
                {"name": "id", "type": "String"},
            ],
            "unique",
        ),
        ([], "schema"),
    ],
)
def test_bad_schemas_are_refused(fields: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        body(fields)
    where = " ".join(
        ".".join(str(p) for p in e["loc"]) + " " + e["msg"] for e in info.value.errors()
    )
    assert words in where


def test_the_schema_reads_and_writes_as_schema() -> None:
    model = body(MEMBER)
    assert model.model_dump(mode="json")["schema"][0]["name"] == "id"


# -- compatibility -------------------------------------------------------------------------------


def fields(items: list[dict[str, Any]]) -> list[SourceField]:
    return [SourceField.model_validate(f) for f in items]


def test_adding_fields_and_turning_pii_on_is_compatible() -> None:
    new = [*MEMBER, {"name": "email", "type": "String", "pii": True}]
    new[1] = {"name": "name", "type": "String", "pii": True}
    assert incompatibilities(fields(MEMBER), fields(new)) == []


@pytest.mark.parametrize(
    ("new", "words"),
    [
        (MEMBER[:2], "field 'phone' is removed"),
        ([MEMBER[0], {"name": "name", "type": "Integer"}, MEMBER[2]], "'name' changes type"),
        ([MEMBER[0], MEMBER[1], {"name": "phone", "type": "String"}], "'phone' turns pii off"),
        (
            [MEMBER[0], {"name": "name", "type": "String", "primary_key": True}, MEMBER[2]],
            "'name' changes primary_key",
        ),
        (
            [*MEMBER, {"name": "branch", "type": "String", "primary_key": True}],
            "'branch' is added as primary_key",
        ),
    ],
)
def test_incompatible_changes_name_the_field(new: list[dict[str, Any]], words: str) -> None:
    assert any(words in p for p in incompatibilities(fields(MEMBER), fields(new)))


async def test_patch_creates_then_versions_and_audits(db: Database) -> None:
    with pytest.raises(NotFoundError):
        async with db.engine.connect() as conn:
            await get(conn, "acme", "member")
    first = await update(db.engine, "acme", "member", body(MEMBER), "key:a")
    assert (first.version, first.created_by, first.updated_by) == (1, "key:a", "key:a")
    same = await update(db.engine, "acme", "member", body(MEMBER), "key:b")
    assert same.version == 1  # nothing changed: no new version
    wider = [*MEMBER, {"name": "email", "type": "String", "pii": True}]
    second = await update(db.engine, "acme", "member", body(wider, "MemberV2"), "key:b")
    assert (second.version, second.source_name) == (2, "MemberV2")
    assert (second.created_by, second.updated_by) == ("key:a", "key:b")
    assert second.created_at == first.created_at
    with pytest.raises(ConflictError, match="field 'email' is removed"):
        await update(db.engine, "acme", "member", body(MEMBER), "key:c")
    async with db.engine.connect() as conn:
        trail = await audit.entries(conn, "acme", "source_schema", "member")
        assert [(e["action"], e["actor"]) for e in trail] == [
            ("create", "key:a"),
            ("update", "key:b"),
        ]
        assert trail[1]["detail"]["added"] == ["email"]
        # another tenant sees nothing
        with pytest.raises(NotFoundError):
            await get(conn, "other", "member")


async def test_the_conversation_type_has_no_schema(db: Database) -> None:
    with pytest.raises(ConflictError, match="built-in"):
        await update(db.engine, "acme", "conversation", body(MEMBER), "key:a")


# -- record decisions ----------------------------------------------------------------------------


def job(file_id: str, day: int = 25) -> SourceJob:
    return SourceJob(
        file_id, "acme", "member", dt.date(2020, 1, day), "x.csv", "drop", "sources/x", 1
    )


async def test_records_are_created_updated_unchanged_and_deleted(db: Database) -> None:
    store = SourceStore(db)
    v1, v2 = job("f1"), job("f2")
    for j in (v1, v2):
        await store.begin(j)
    rows = [Incoming(1, "1", "h1"), Incoming(2, "2", "h2"), Incoming(3, "3", "h3")]
    assert await store.apply_chunk(v1, rows, None) == ["created"] * 3
    # a replay of the same chunk repeats the decisions, a repeated key is a duplicate
    assert await store.apply_chunk(v1, [*rows, Incoming(4, "1", "h9")], None) == [
        "created",
        "created",
        "created",
        "duplicate",
    ]
    assert await store.delete_missing(v1) == []
    assert (await store.finish(v1))["created"] == 3
    new = [Incoming(1, "1", "h1"), Incoming(2, "2", "CHANGED")]
    assert await store.apply_chunk(v2, new, "Invalid data type in column [x]") == [
        "unchanged",
        "updated",
    ]
    assert await store.delete_missing(v2) == ["3"]
    assert await store.delete_missing(v2) == ["3"]  # again after a crash: published again
    counts = await store.finish(v2)
    assert counts == {"created": 0, "updated": 1, "unchanged": 1, "deleted": 1}


async def test_a_later_dates_record_is_not_deleted_by_an_older_dates_reupload(db: Database) -> None:
    store = SourceStore(db)
    d25a, d26, d25b = job("a", 25), job("b", 26), job("c", 25)
    for j in (d25a, d26, d25b):
        await store.begin(j)
    await store.apply_chunk(d25a, [Incoming(1, "1", "h"), Incoming(2, "2", "h")], None)
    await store.apply_chunk(d26, [Incoming(1, "2", "h2")], None)
    assert await store.delete_missing(d25b) == ["1"]  # "2" now belongs to the 26th


# -- API -----------------------------------------------------------------------------------------


@pytest.fixture
async def client(db: Database) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async def authenticate(request: web.Request, auth: Auth) -> Principal:
        token = request.headers.get("Authorization", "")
        if not token.startswith("Bearer "):
            raise Unauthorized("no key")
        tenant = token.removeprefix("Bearer ")
        return Principal(tenant=tenant, key_id=f"k-{tenant}")

    ctx = ApiContext(Settings(), db.engine, AvroCodec(), Topics(), Metrics())
    app = web.Application(middlewares=[problem_middleware])
    install(app, ctx, [sources_api.routes], authenticate)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


SEED_PATCH = {
    "source_name": "MemberV2",
    "description": "updated member's information and personal details",
    "schema": [
        {"name": "id", "type": "Integer", "primary_key": True},
        {"name": "name", "type": "String"},
        {"name": "birthdate", "type": "Date"},
        {"name": "address", "type": "String", "pii": True},
        {"name": "phone", "type": "String", "pii": True},
    ],
}
ACME = {"Authorization": "Bearer acme"}
URL = "/v1/acme/sources/member/schema"


async def test_schema_api_in_the_seeds_shape(client: TestClient[Any, Any]) -> None:
    assert (await client.get(URL, headers=ACME)).status == 404
    resp = await client.patch(URL, json=SEED_PATCH, headers=ACME)
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert doc["source_type"] == "member"
    assert doc["schema"][3] == {
        "name": "address",
        "type": "String",
        "pii": True,
        "primary_key": False,
    }
    assert isinstance(doc["created_at"], int)
    assert doc["updated_by"] == "key:k-acme"
    assert await (await client.get(URL, headers=ACME)).json() == doc
    removed = {**SEED_PATCH, "schema": SEED_PATCH["schema"][:4]}
    resp = await client.patch(URL, json=removed, headers=ACME)
    assert resp.status == 409
    problem = await resp.json()
    assert "'phone' is removed" in problem["detail"]
    added = {**SEED_PATCH, "schema": [*SEED_PATCH["schema"], {"name": "email", "type": "String"}]}
    assert (await client.patch(URL, json=added, headers=ACME)).status == 200
    page = await (await client.get(URL + "/versions?limit=1", headers=ACME)).json()
    assert [v["version"] for v in page["items"]] == [1]
    rest = await (
        await client.get(URL + f"/versions?cursor={page['next_cursor']}", headers=ACME)
    ).json()
    assert [v["version"] for v in rest["items"]] == [2]
    assert rest["next_cursor"] is None


async def test_schema_api_refuses_bad_bodies_naming_the_field(client: TestClient[Any, Any]) -> None:
    bad = {**SEED_PATCH, "schema": [{"name": "Cust Name", "type": "Text", "primary_key": True}]}
    resp = await client.patch(URL, json=bad, headers=ACME)
    assert resp.status == 422
    fields_ = {e["field"] for e in (await resp.json())["errors"]}
    assert {"schema.0.name", "schema.0.type"} <= fields_


async def test_another_tenants_schema_is_not_found(client: TestClient[Any, Any]) -> None:
    assert (await client.patch(URL, json=SEED_PATCH, headers=ACME)).status == 200
    other = {"Authorization": "Bearer other"}
    assert (await client.get(URL, headers=other)).status == 404
    assert (await client.get("/v1/other/sources/member/schema", headers=other)).status == 404
    assert (await client.get("/v1/acme/sources/Bad-Type/schema", headers=ACME)).status == 404


async def test_job_status_needs_a_date(client: TestClient[Any, Any]) -> None:
    await client.patch(URL, json=SEED_PATCH, headers=ACME)
    job_url = "/v1/acme/sources/member/job"
    for query in ("", "?date=2020-01-25", "?date=20201341"):
        resp = await client.get(job_url + query, headers=ACME)
        assert resp.status == 422, query
        assert [e["field"] for e in (await resp.json())["errors"]] == ["query.date"]
    resp = await client.get(job_url + "?date=20200125", headers=ACME)
    assert resp.status == 404
    assert "20200125" in (await resp.json())["detail"]


def test_source_records_and_tombstones_encode_and_decode(db: Database) -> None:
    from streams.ingest.sourcefiles import SOURCE_RECORD, SourceFiles

    codec = AvroCodec()
    files = SourceFiles(db, codec, Topics(), None, Metrics(), 1_000_000)  # type: ignore[arg-type]
    rec = {"key": "7", "values": {"id": "7", "phone": None}, "hash": "h"}
    decoded = codec.decode(SOURCE_RECORD, files._value(job("f1"), 3, None, rec, "updated"))
    assert decoded["date"] == dt.date(2020, 1, 25)
    assert (decoded["primary_key"], decoded["change"], decoded["schema_version"]) == (
        "7",
        "updated",
        3,
    )
    assert decoded["values"] == {"id": "7", "phone": None}
    gone = codec.decode(SOURCE_RECORD, files._value(job("f1"), 3, None, None, "deleted", "7"))
    assert (gone["primary_key"], gone["values"], gone["content_hash"]) == ("7", {}, None)
