"""Tenants, API keys and authentication through the running service's /v1 API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, Reply, new_tenant
from openapi_spec_validator import validate
from sqlalchemy import select
from support import connector, running, settings_for, unique_prefix

from connectors.local import LocalConfig
from streams.control.keys import api_keys

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ApiClient, object]]:
    """A running service (no processors: these tests need only the control plane)."""
    tmp = tmp_path_factory.mktemp("api")
    settings = settings_for(
        kafka,
        "apiauth",
        tmp,
        [],
        api={"operator_token": OPERATOR_TOKEN, "max_body_bytes": 4096},
        processors={"enabled": False},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        yield client, service


async def test_a_tenant_created_by_the_operator_gets_keys_that_authenticate(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    key = await new_tenant(operator, "globex")
    me = await client.as_(key).get("/v1/tenant")
    assert me.status == 200
    assert me.body["id"] == "globex" and me.body["status"] == "active"
    got = await operator.get("/v1/tenants/globex")
    assert got.body["origin"] == "api"
    again = await operator.post("/v1/tenants", {"id": "globex", "name": "Other"})
    assert again.status == 409 and again.content_type == "application/problem+json"
    assert "already exists" in again.body["detail"]


async def test_a_third_active_key_is_refused_until_one_is_revoked(api) -> None:
    client, service = api
    operator = client.as_(OPERATOR_TOKEN)
    first = await new_tenant(operator, "initech")
    tenant = client.as_(first)
    second = await tenant.post("/v1/keys", {"name": "second"})
    assert second.status == 201
    third = await tenant.post("/v1/keys", {"name": "third"})
    assert third.status == 409
    assert "revoke one" in third.body["detail"]

    listed = await tenant.get("/v1/keys")
    assert [k["name"] for k in listed.body["items"]] == ["second", "tests"]
    for item in listed.body["items"]:
        assert "key" not in item
        assert item["masked_key"].startswith(f"csk_{item['key_id']}_****")
        assert item["masked_account_id"] == "in***ch"
    assert second.body["key"] not in listed.text and first not in listed.text
    used = next(k for k in listed.body["items"] if k["name"] == "tests")
    assert used["last_used_at"] is not None  # the key listing them was just used

    revoked = await tenant.post(f"/v1/keys/{second.body['key_id']}/revoke")
    assert revoked.status == 200 and revoked.body["status"] == "revoked"
    assert (await client.as_(second.body["key"]).get("/v1/tenant")).status == 401
    third = await tenant.post("/v1/keys", {"name": "third"})
    assert third.status == 201

    # Only hashes are stored: no key appears in the table.
    async with service.api.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys))).mappings().all()
    dump = repr([dict(r) for r in rows])
    for key in (first, second.body["key"], third.body["key"]):
        assert key not in dump and key[17:] not in dump  # csk_<12 hex>_<secret>


async def test_concurrent_creations_never_exceed_two_active_keys(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    created = await operator.post("/v1/tenants", {"id": "umbrella", "name": "Umbrella"})
    assert created.status == 201
    replies = await asyncio.gather(
        *(operator.post("/v1/tenants/umbrella/keys", {"name": f"k{i}"}) for i in range(6))
    )
    assert sorted(r.status for r in replies) == [201, 201, 409, 409, 409, 409]


async def test_bad_credentials_are_401_and_never_say_why_a_key_failed(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    key = await new_tenant(operator, "hooli")
    cases = {
        "no header": client.as_(None),
        "malformed": client.as_("not-a-key"),
        "unknown": client.as_("csk_000000000000_" + "A" * 43),
        "wrong secret": client.as_(key[:-4] + "AAAA"),
        "tenant key on operator route": client.as_(key),
    }
    for label, caller in cases.items():
        path = "/v1/tenants" if label.startswith("tenant key") else "/v1/tenant"
        reply = await caller.get(path)
        assert reply.status == 401, label
        assert reply.content_type == "application/problem+json", label
        assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer"), label
    wrong_operator = await client.as_("x" * 40).get("/v1/tenants")
    assert wrong_operator.status == 401


async def test_a_disabled_tenants_keys_fail_until_it_is_enabled(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    key = await new_tenant(operator, "vandelay")
    disabled = await operator.post("/v1/tenants/vandelay/disable")
    assert disabled.body["status"] == "disabled"
    assert (await client.as_(key).get("/v1/tenant")).status == 401
    await operator.post("/v1/tenants/vandelay/enable")
    assert (await client.as_(key).get("/v1/tenant")).status == 200


async def test_errors_are_problem_details_naming_the_field(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    bad = await operator.post("/v1/tenants", {"id": "Bad Id!", "name": ""})
    assert bad.status == 422
    fields = {e["field"] for e in bad.body["errors"]}
    assert fields == {"id", "name"}
    assert bad.body["title"] == "Unprocessable Content" and bad.body["instance"] == "/v1/tenants"

    not_json = await operator.post(
        "/v1/tenants", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400 and "not valid JSON" in not_json.body["detail"]
    text = await operator.post("/v1/tenants", data=b"id=x", headers={"Content-Type": "text/plain"})
    assert text.status == 415
    huge = await operator.post("/v1/tenants", {"id": "big", "name": "x" * 10_000})
    assert huge.status == 413 and huge.content_type == "application/problem+json"
    page = await operator.get("/v1/tenants", params={"limit": "100000"})
    assert page.status == 422 and page.body["errors"][0]["field"] == "query.limit"
    cursor = await operator.get("/v1/tenants", params={"cursor": "Z2FyYmFnZQ"})  # not ours
    assert cursor.status == 400 and "invalid cursor" in cursor.body["detail"]
    cursor = await operator.get("/v1/tenants", params={"cursor": "garbage!"})  # not base64url
    assert cursor.status == 422 and cursor.body["errors"][0]["field"] == "query.cursor"
    missing = await operator.get("/v1/tenants/nobody")
    assert missing.status == 404
    unknown_route = await operator.get("/v1/nothing-here")
    assert unknown_route.status == 404 and unknown_route.content_type == "application/problem+json"


async def test_tenant_lists_are_paginated_without_skips_or_repeats(api) -> None:
    client, _service = api
    operator = client.as_(OPERATOR_TOKEN)
    for i in range(5):
        await operator.post("/v1/tenants", {"id": f"page-{i}", "name": f"Page {i}"})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await operator.get("/v1/tenants", params=params)
        assert page.status == 200 and len(page.body["items"]) <= 2
        seen += [t["id"] for t in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen))
    assert {f"page-{i}" for i in range(5)} <= set(seen)


async def test_the_openapi_document_is_valid_and_lists_every_route(api) -> None:
    client, _service = api
    doc = await client.get("/v1/openapi.json")
    assert doc.status == 200 and doc.body["openapi"] == "3.1.0"
    validate(doc.body)
    ops = {(m.upper(), p) for p, item in doc.body["paths"].items() for m in item}
    assert ("POST", "/v1/tenants") in ops and ("POST", "/v1/keys/{key_id}/revoke") in ops
    page = await client.get("/v1/docs")
    assert page.status == 200 and "openapi.json" in page.text


async def test_the_audit_trail_records_who_changed_what(api) -> None:
    from streams.control import audit

    client, service = api
    operator = client.as_(OPERATOR_TOKEN)
    key = await new_tenant(operator, "stark")
    made = await client.as_(key).post("/v1/keys", {"name": "ci"})
    async with service.api.engine.connect() as conn:
        trail = await audit.entries(conn, "stark", "api_key", made.body["key_id"])
        tenant_trail = await audit.entries(conn, "stark", "tenant", "stark")
    assert [(e["action"], e["actor"]) for e in trail] == [("create", f"key:{key[4:16]}")]
    assert [(e["action"], e["actor"]) for e in tenant_trail] == [("create", "operator")]


async def test_config_file_tenants_are_listed_for_the_operator(tmp_path: Path, kafka: str) -> None:
    """Config-file tenants are recorded at start (origin config) and can hold API keys."""
    settings = settings_for(
        kafka,
        "apicfg",
        tmp_path,
        [],
        tenant="acme",
        api={"operator_token": OPERATOR_TOKEN},
        processors={"enabled": False},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        got = await client.as_(OPERATOR_TOKEN).get("/v1/tenants/acme")
        assert got.status == 200 and got.body["origin"] == "config"
        key = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "k"})
        assert key.status == 201


async def _connectors_once_running(client: ApiClient, name: str) -> Reply:
    """GET /connectors until ``name`` is listed (its worker owns it once Kafka assigns it)."""
    deadline = time.monotonic() + 30
    while True:
        reply = await client.get("/connectors")
        assert reply.status == 200, reply.text
        if any(c["connector"] == name for c in reply.body["connectors"]):
            return reply
        assert time.monotonic() < deadline, reply.body
        await asyncio.sleep(0.2)


async def test_connectors_lists_every_tenants_connectors_to_the_operator_only(
    tmp_path: Path, kafka: str
) -> None:
    """/connectors names every tenant's stores and last errors: anonymous callers and wrong
    tokens get 401, a tenant's API key (known, but not the operator) 403."""
    (tmp_path / "in").mkdir()
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp_path / "data",
        [connector("daily", LocalConfig(root=tmp_path / "in"))],
        api={"operator_token": OPERATOR_TOKEN},
        processors={"enabled": False},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        operator = client.as_(OPERATOR_TOKEN)
        other_tenant = await new_tenant(operator, "umbrella")
        listed = await _connectors_once_running(operator, "daily")
        assert [(c["tenant"], c["connector"]) for c in listed.body["connectors"]] == [
            ("acme", "daily")
        ]
        for label, caller, status in [
            ("anonymous", client.as_(None), 401),
            ("wrong operator token", client.as_("x" * 40), 401),
            ("another tenant's key", client.as_(other_tenant), 403),
        ]:
            reply = await caller.get("/connectors")
            assert reply.status == status, label
            assert reply.content_type == "application/problem+json", label
            assert "acme" not in reply.text and "daily" not in reply.text, label
        anonymous = await client.as_(None).get("/connectors")
        assert anonymous.headers.get("WWW-Authenticate", "").startswith("Bearer")


async def test_a_runner_only_worker_serves_connectors_only_with_an_operator_token(
    tmp_path: Path, kafka: str
) -> None:
    """Without the api role /connectors is checked against api.operator_token; no token set:
    not served at all (404), while /metrics stays open."""
    (tmp_path / "in").mkdir()
    conns = [connector("daily", LocalConfig(root=tmp_path / "in"))]
    for token in (None, OPERATOR_TOKEN):
        settings = settings_for(
            kafka,
            unique_prefix(),
            tmp_path / f"data-{token is not None}",
            conns,
            roles=["connectors"],
            api={"operator_token": token},
        )
        async with running(settings) as service, ApiClient(service.http_url or "") as client:
            assert (await client.get("/metrics")).status == 200
            if token is None:
                assert (await client.as_(OPERATOR_TOKEN).get("/connectors")).status == 404
                continue
            assert (await client.get("/connectors")).status == 401
            listed = await _connectors_once_running(client.as_(token), "daily")
            assert [c["connector"] for c in listed.body["connectors"]] == ["daily"]
