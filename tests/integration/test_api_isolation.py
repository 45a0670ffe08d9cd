"""Isolation matrix: every route of the OpenAPI document, called as every kind of wrong caller.

Tenant ``alpha`` owns one of each resource (key, connector, conversation, case, schema, ...).
Every operation in ``/v1/openapi.json`` is called with path parameters naming alpha's resources
and, as the caller: tenant ``beta``'s key, alpha's revoked key, no key and a malformed key.

- no, malformed or revoked key: 401 on every non-public route;
- beta's key: 404 on every route naming one of alpha's resources, 401 on operator routes, and
  on beta's own collections whatever beta may see — but no response body, whatever its status,
  contains any of alpha's identifiers (beyond echoing the ids the caller put in the URL).

A route whose path parameter the matrix cannot fill fails the test: a new route must join it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, Reply, new_tenant
from support import running, settings_for

from streams.cases.store import file_outcomes
from streams.db import Database
from streams.exports.storage import report_files
from streams.ingest.sourcestore import SourceJob, SourceStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALPHA, BETA = "alpha-7f3c", "beta-91de"
ALPHA_JOB = "a1fa0000000000000000000000000001"
ALPHA_REPORT = "rpt_a1fa00000000000000000001"


async def _seed_job(database_url: str) -> None:
    """Alpha's member file of 2020-01-25, as the file processor records it."""
    async with Database(database_url) as db:
        store = SourceStore(db)
        job = SourceJob(
            ALPHA_JOB,
            ALPHA,
            "member",
            dt.date(2020, 1, 25),
            "20200125_member.csv",
            "drop",
            "sources/member/20200125_member.csv",
            1,
        )
        await store.begin(job)
        await store.finish(job)
        async with db.engine.begin() as conn:
            await conn.execute(
                file_outcomes.insert().values(
                    file_id=ALPHA_JOB,
                    tenant=ALPHA,
                    connector="drop",
                    path=job.path,
                    version_id="v1",
                    outcome="processed",
                    rows_accepted=0,
                    rows_rejected=0,
                    decided_at=dt.datetime.now(dt.UTC),
                )
            )


async def _seed_report(database_url: str) -> None:
    """Alpha's stored report file, as an export run records it (the bytes are not needed)."""
    now = dt.datetime.now(dt.UTC)
    async with Database(database_url) as db, db.engine.begin() as conn:
        await conn.execute(
            report_files.insert().values(
                id=ALPHA_REPORT,
                tenant=ALPHA,
                execution_id="exe_alpha",
                name="alpha-report.csv",
                format="csv",
                content_type="text/csv; charset=utf-8",
                rows=0,
                bytes=0,
                storage_key=f"reports/{ALPHA}/{ALPHA_REPORT}/alpha-report.csv",
                created_at=now,
                expires_at=now + dt.timedelta(days=7),
            )
        )


@dataclass
class World:
    """The running service, its operation list and alpha's resources."""

    client: ApiClient
    document: dict[str, Any]
    alpha_key: str
    alpha_revoked_key: str
    beta_key: str
    params: dict[str, str]
    """Path parameter name -> one of alpha's resources."""
    secrets: set[str]
    """Strings that identify alpha's data; none may appear in an answer to another caller."""


#: A valid body for every tenant operation that takes one: validation runs before the handler
#: looks the resource up, so only a valid body shows whether another tenant's id is refused.
def _s3(bucket: str) -> dict[str, Any]:
    """An S3 store nobody serves (creating a connector needs no connection)."""
    return {"type": "s3", "bucket": bucket, "endpoint_url": "http://127.0.0.1:9"}


#: A string "{name}" in a body stands for alpha's resource ``params[name]``.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/keys"): {"name": "probe"},
    ("POST", "/v1/connectors"): {"name": "probe", "store": _s3("beta-probe-bucket")},
    ("PATCH", "/v1/connectors/{id}"): {"enabled": False},
    ("POST", "/v1/connector-tests"): {"name": "probe", "store": _s3("beta-probe-bucket")},
    ("POST", "/v1/export-connectors"): {"name": "probe", "config": _s3("beta-export-bucket")},
    ("PATCH", "/v1/export-connectors/{connector_id}"): {"enabled": False},
    ("POST", "/v1/export-connector-tests"): {
        "name": "probe",
        "config": {"type": "email", "to": ["probe@beta.example"]},
    },
    ("PATCH", "/v1/{tenant}/sources/{source_type}/schema"): {
        "source_name": "Probe",
        "schema": [{"name": "id", "type": "Integer", "primary_key": True}],
    },
    ("POST", "/v1/conversations"): {
        "external_interaction_id": "PROBE-1",
        "started_at": "2026-11-20T09:00:00Z",
    },
    ("POST", "/v1/dead-letters/replay"): {"ids": ["{dead_letter_id}"]},
    ("POST", "/v1/users"): {"name": "probe", "email": "probe@beta.example"},
    ("PATCH", "/v1/tenant"): {"timezone": "UTC"},
    ("POST", "/v1/reports/email-me"): {"columns": ["case_id"]},
    ("POST", "/v1/dropbox/accounts"): {
        "username": "beta-probe",
        "connector_id": "{dropbox_connector_id}",
        "password": "beta-probe-password",
        "allow_from": ["127.0.0.1"],
    },
    ("PATCH", "/v1/dropbox/accounts/{account_id}"): {"enabled": False},
    ("POST", "/v1/jobs"): {
        "name": "probe",
        "type": "data_import",
        "connectors": ["{id}"],
        "frequency": "daily",
    },
}

#: The required query parameters of operations that have some, naming alpha's resources.
QUERIES: dict[str, dict[str, str]] = {
    "/v1/{tenant}/sources/{source_type}/job": {"date": "20200125"},
}


def _body_for(method: str, path: str, op: dict[str, Any], params: dict[str, str]) -> Any:
    """The valid body of a tenant operation that takes one (None when it takes none)."""
    if "requestBody" not in op or op["security"] != [{"tenant": []}]:
        return None
    assert (method, path) in BODIES, f"the isolation matrix has no body for {method} {path}"
    text = json.dumps(BODIES[(method, path)])
    return json.loads(re.sub(r'"\{(\w+)\}"', lambda m: json.dumps(params[m.group(1)]), text))


async def _alpha_case(alpha: ApiClient) -> tuple[dict[str, str], set[str]]:
    """Push one good and one bad conversation as alpha; wait for the case and its result."""
    pushed = await alpha.post(
        "/v1/conversations",
        {
            "items": [
                {"external_interaction_id": "ALPHA-CALL-1", "started_at": "2026-11-20T09:00:00Z"},
                {"external_interaction_id": "ALPHA-BAD-1", "started_at": "never"},
            ]
        },
    )
    assert pushed.status == 202, pushed.text
    good, bad = pushed.body["items"]
    deadline = time.monotonic() + 60
    while not (await alpha.get(f"/v1/results?case_id={good['case_id']}")).body["items"]:
        assert time.monotonic() < deadline, "alpha's pushed conversation never got a result"
        await asyncio.sleep(0.3)
    params = {"case_id": good["case_id"], "dead_letter_id": bad["dead_letter_id"]}
    secrets = {*params.values(), "ALPHA-CALL-1", "ALPHA-BAD-1", pushed.body["request_id"]}
    return params, secrets


async def _seed(client: ApiClient, data_dir: Path) -> World:
    operator = client.as_(OPERATOR_TOKEN)
    alpha_key = await new_tenant(operator, ALPHA, "alpha main")
    alpha = client.as_(alpha_key)
    spare = await alpha.post("/v1/keys", {"name": "alpha spare"})
    assert spare.status == 201
    revoked = await alpha.post(f"/v1/keys/{spare.body['key_id']}/revoke")
    assert revoked.status == 200
    connector = await alpha.post(
        "/v1/connectors", {"name": "alpha-crm", "store": _s3("alpha-bucket-7f3c")}
    )
    assert connector.status == 201, connector.text
    exporter = await alpha.post(
        "/v1/export-connectors",
        {"name": "alpha-exports", "config": {"type": "email", "to": ["qa@alpha-7f3c.example"]}},
    )
    assert exporter.status == 201, exporter.text
    user = await alpha.post("/v1/users", {"name": "Alpha Person", "email": "person@alpha.example"})
    assert user.status == 201, user.text
    dropbox_connector = await alpha.post(
        "/v1/connectors",
        {
            "name": "alpha-dropbox",
            "store": {
                "type": "local",
                "root": str(data_dir / "local" / ALPHA / "in"),
                "create": True,
            },
        },
    )
    assert dropbox_connector.status == 201, dropbox_connector.text
    account = await alpha.post(
        "/v1/dropbox/accounts",
        {
            "username": "alpha-uploader-7f3c",
            "connector_id": dropbox_connector.body["id"],
            "password": "alpha-dropbox-password",
            "allow_from": ["127.0.0.1"],
        },
    )
    assert account.status == 201, account.text
    beta_key = await new_tenant(operator, BETA, "beta main")
    main_key_id = alpha_key.split("_")[1]
    schema = await alpha.patch(
        f"/v1/{ALPHA}/sources/member/schema",
        {
            "source_name": "Alpha Members",
            "schema": [{"name": "id", "type": "Integer", "primary_key": True}],
        },
    )
    assert schema.status == 200, schema.text
    params = {
        "tenant": ALPHA,
        "tenant_id": ALPHA,
        "key_id": main_key_id,
        "id": connector.body["id"],
        "connector_id": exporter.body["id"],
        "source_type": "member",
        "report_id": ALPHA_REPORT,
        "user_id": user.body["id"],
        "dropbox_connector_id": dropbox_connector.body["id"],
        "account_id": account.body["id"],
    }
    secrets = {
        dropbox_connector.body["id"],
        account.body["id"],
        "alpha-uploader-7f3c",
        user.body["id"],
        "person@alpha.example",
        "Alpha Person",
        ALPHA,
        main_key_id,
        spare.body["key_id"],
        "alpha main",
        "alpha spare",
        "Alpha Members",
        ALPHA_JOB,
        ALPHA_REPORT,
        "alpha-report.csv",
        connector.body["id"],
        "alpha-crm",
        "alpha-bucket-7f3c",
        exporter.body["id"],
        "alpha-exports",
        "qa@alpha-7f3c.example",
    }
    job = await alpha.post(
        "/v1/jobs",
        {
            "name": "alpha nightly",
            "type": "data_import",
            "connectors": [connector.body["id"]],
            "frequency": "daily",
            "timezone": "Asia/Kolkata",
        },
    )
    assert job.status == 201, job.text
    run = await alpha.post(f"/v1/jobs/{job.body['id']}/trigger")
    assert run.status == 202, run.text
    params |= {"job_id": job.body["id"], "execution_id": run.body["id"]}
    secrets |= {job.body["id"], run.body["id"], "alpha nightly"}
    pushed, pushed_secrets = await _alpha_case(alpha)
    params.update(pushed)
    secrets |= pushed_secrets
    document = (await client.get("/v1/openapi.json")).body
    return World(client, document, alpha_key, spare.body["key"], beta_key, params, secrets)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("isolation")
    settings = settings_for(kafka, "isolation", tmp, [], api={"operator_token": OPERATOR_TOKEN})
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        await _seed_job(settings.database_url)
        await _seed_report(settings.database_url)
        yield await _seed(client, settings.data_dir)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def _fill(path: str, params: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in params, f"the isolation matrix has no value for {{{name}}} in {path}"
        return params[name]

    return re.sub(r"\{(\w+)\}", value, path)


def _leaks(reply: Reply, secrets: set[str], url: str) -> list[str]:
    """Alpha's identifiers in an answer, beyond those the caller itself sent in the URL."""
    return sorted(s for s in secrets if s in reply.text and s not in url)


async def test_every_route_refuses_other_tenants_and_bad_credentials(world: World) -> None:
    client = world.client
    callers = {
        "beta's key": world.beta_key,
        "revoked key": world.alpha_revoked_key,
        "no key": None,
        "malformed key": "Bearer-not-a-key",
    }
    failures: list[str] = []
    calls = 0
    for method, path, op in _operations(world.document):
        public = op["security"] == []
        if public:
            continue
        operator_route = op["security"] == [{"operator": []}]
        url = _fill(path, world.params)
        names_a_resource = "{" in path
        body = _body_for(method, path, op, world.params)
        for label, token in callers.items():
            query = QUERIES.get(path)
            reply = await client.as_(token).call(method, url, body, params=query)
            calls += 1
            where = f"{method} {path} as {label}: {reply.status}"
            if label != "beta's key" or operator_route:
                expected = {401}
            elif names_a_resource:
                expected = {404}
            else:
                expected = None  # beta's own collection: any non-5xx answer
            if expected is not None and reply.status not in expected:
                failures.append(f"{where}, expected {sorted(expected)}: {reply.text[:200]}")
            if reply.status >= 500:
                failures.append(f"{where}: server error")
            if leaked := _leaks(reply, world.secrets, url):
                failures.append(f"{where}: body contains alpha's {leaked}")
    print(
        f"\nisolation matrix: {len(_operations(world.document))} operations x "
        f"{len(callers)} callers = {calls} calls, {len(failures)} failures"
    )
    assert not failures, "\n".join(failures)


async def test_alpha_still_sees_its_own_resources(world: World) -> None:
    """The matrix's expectations are not vacuous: alpha's own key reaches what beta cannot."""
    alpha = world.client.as_(world.alpha_key)
    for method, path, op in _operations(world.document):
        if method != "GET" or op["security"] != [{"tenant": []}]:
            continue
        reply = await alpha.get(_fill(path, world.params), params=QUERIES.get(path))
        assert reply.status == 200, f"GET {path} as alpha: {reply.status} {reply.text[:200]}"
    listed = await alpha.get("/v1/keys")
    assert "alpha main" in json.dumps(listed.body)
