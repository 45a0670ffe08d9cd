"""Connectors through the running service's /v1 API, against real Kafka and OpenSSH sftp.

What a tenant notices: a connector created through the API picks files up without a restart
and its conversations become cases; a PATCH takes effect, a DELETE or a disabled tenant stops
polling; another tenant's connector does not exist for them; a generated key pair logs in once
its public key is installed; no secret ever comes back in a response, a log line or the table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, Reply, new_tenant
from servers.sshd import SftpServer
from sqlalchemy import select
from support import (
    TopicReader,
    connector,
    conversations_csv,
    free_port,
    running,
    settings_for,
    sftp_config,
    sftp_session,
    unique_prefix,
    upload,
)

from streams.control.audit import audit_log
from streams.control.connectors import connectors, new_private_key, public_key_line
from streams.service import Service
from streams.topics import Topics

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("clean_upload")]

FAST = {"interval_seconds": 0.3, "min_age_seconds": 0}


class Collected(logging.Handler):
    """Every log line of the in-process service, formatted as the service would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def logs() -> Iterator[Collected]:
    handler = Collected()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class Recorder(ApiClient):
    """An API client that keeps every response body, to search them for secrets."""

    bodies: list[str]

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> Reply:
        reply = await super().call(method, path, json, **kw)
        self.bodies.append(reply.text)
        return reply

    def as_(self, token: str | None) -> Recorder:
        other = Recorder(self.base, token)
        other._session = self._session
        other.bodies = self.bodies
        return other


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(
    kafka: str, sftp_server: SftpServer, tmp_path_factory: pytest.TempPathFactory, logs: Collected
) -> AsyncIterator[tuple[Recorder, Service, str]]:
    """A running service (SQLite, no processors: these tests watch announcements)."""
    prefix = unique_prefix()
    settings = settings_for(
        kafka,
        prefix,
        tmp_path_factory.mktemp("connapi"),
        [],
        api={"operator_token": OPERATOR_TOKEN, "connect_allow": ["127.0.0.1/32"]},
        processors={"enabled": False},
    )
    async with running(settings) as service:
        client = Recorder(service.http_url or "")
        client.bodies = []
        async with client:
            yield client, service, prefix


def sftp_store(server: SftpServer, root: str, user: str = "cs_pw", **extra: Any) -> dict[str, Any]:
    account = server.users[user]
    store: dict[str, Any] = {
        "type": "sftp",
        "host": server.host,
        "port": server.port,
        "username": account.name,
        "host_key": server.host_key_line,
        "root": root,
        "operation_timeout_seconds": 5,
        "connect_timeout_seconds": 5,
    }
    if account.password is not None:
        store["password"] = account.password
    return store | extra


async def running_names(client: ApiClient) -> dict[str, dict[str, Any]]:
    """The runner's connectors as /connectors shows them, by tenant/name."""
    reply = await client.as_(OPERATOR_TOKEN).get("/connectors")
    assert reply.status == 200, reply.text
    return {f"{c['tenant']}/{c['connector']}": c for c in reply.body["connectors"]}


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_an_api_connector_is_applied_changed_and_stopped_without_a_restart(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer
) -> None:
    client, _service, prefix = api
    key = await new_tenant(client.as_(OPERATOR_TOKEN), "wayne")
    tenant = client.as_(key)
    reader = TopicReader(_bootstrap(_service), Topics(prefix).file_arrivals)
    try:
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "wayne/first.csv", b"a,b\n1,2\n")
        started = time.monotonic()
        created = await tenant.post(
            "/v1/connectors",
            {"name": "crm", "store": sftp_store(sftp_server, "/upload/wayne"), "poll": FAST},
        )
        assert created.status == 201, created.text
        cid = created.body["id"]
        await reader.wait_for(lambda rs: any(r["path"] == "first.csv" for r in rs))
        print(f"\ncreate -> first announcement: {time.monotonic() - started:.2f} s")

        # A wrong password through PATCH: the running connector is replaced and fails to log in.
        wrong = await tenant.patch(f"/v1/connectors/{cid}", {"store": {"password": "wrong-pw"}})
        assert wrong.status == 200 and wrong.body["revision"] == 2

        async def failing() -> bool:
            c = (await running_names(client)).get("wayne/crm")
            return c is not None and c["last_error_kind"] == "auth"

        await wait_until(failing)
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "wayne/second.csv", b"a,b\n3,4\n")
        await asyncio.sleep(1.5)
        await asyncio.to_thread(reader.poll, 0.3)
        assert not [r for r in reader.records if r["path"] == "second.csv"]
        right = sftp_server.users["cs_pw"].password
        fixed = await tenant.patch(f"/v1/connectors/{cid}", {"store": {"password": right}})
        assert fixed.body["revision"] == 3
        await reader.wait_for(lambda rs: any(r["path"] == "second.csv" for r in rs))

        deleted = await tenant.delete(f"/v1/connectors/{cid}")
        assert deleted.status == 204
        await wait_until(lambda: _absent(client, "wayne/crm"))
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "wayne/after-delete.csv", b"a,b\n5,6\n")
        await asyncio.sleep(2)  # several poll intervals and reconcile steps
        await asyncio.to_thread(reader.poll, 0.5)
    finally:
        reader.close()
    paths = [r["path"] for r in reader.records if r["tenant"] == "wayne"]
    assert paths == ["first.csv", "second.csv"]
    assert (await tenant.get(f"/v1/connectors/{cid}")).status == 404


async def _absent(client: ApiClient, name: str) -> bool:
    return name not in await running_names(client)


def _bootstrap(service: Service) -> str:
    servers = service.settings.kafka.bootstrap_servers
    assert servers is not None
    return servers


async def test_disabling_the_tenant_stops_its_connectors_and_enabling_resumes_them(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer
) -> None:
    client, service, prefix = api
    operator = client.as_(OPERATOR_TOKEN)
    tenant = client.as_(await new_tenant(operator, "stark"))
    created = await tenant.post(
        "/v1/connectors",
        {"name": "calls", "store": sftp_store(sftp_server, "/upload/stark"), "poll": FAST},
    )
    assert created.status == 201, created.text
    await wait_until(lambda: _present(client, "stark/calls"))
    assert (await operator.post("/v1/tenants/stark/disable")).status == 200
    await wait_until(lambda: _absent(client, "stark/calls"))
    reader = TopicReader(_bootstrap(service), Topics(prefix).file_arrivals)
    try:
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "stark/while-disabled.csv", b"a\n1\n")
        await asyncio.sleep(2)
        await asyncio.to_thread(reader.poll, 0.5)
        assert not [r for r in reader.records if r["tenant"] == "stark"]
        await operator.post("/v1/tenants/stark/enable")
        await reader.wait_for(lambda rs: any(r["tenant"] == "stark" for r in rs))
    finally:
        reader.close()


async def _present(client: ApiClient, name: str) -> bool:
    return name in await running_names(client)


async def test_another_tenants_connector_is_404_on_every_connector_route(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer
) -> None:
    client, _service, _prefix = api
    operator = client.as_(OPERATOR_TOKEN)
    owner = client.as_(await new_tenant(operator, "oscorp"))
    other = client.as_(await new_tenant(operator, "lexcorp"))
    created = await owner.post(
        "/v1/connectors", {"name": "crm", "store": sftp_store(sftp_server, "/upload/oscorp")}
    )
    cid = created.body["id"]
    replies = [
        await other.get(f"/v1/connectors/{cid}"),
        await other.patch(f"/v1/connectors/{cid}", {"enabled": False}),
        await other.delete(f"/v1/connectors/{cid}"),
        await other.post(f"/v1/connectors/{cid}/keypair"),
    ]
    assert [r.status for r in replies] == [404, 404, 404, 404]
    for reply in replies:
        assert "oscorp" not in reply.text and "upload" not in reply.text
    listed = await other.get("/v1/connectors")
    assert listed.body["items"] == []
    still = await owner.get(f"/v1/connectors/{cid}")
    assert still.status == 200 and still.body["enabled"] is True and still.body["revision"] == 1


async def test_validation_and_conflicts_name_the_field_and_the_other_connector(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer
) -> None:
    client, _service, _prefix = api
    tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "cyberdyne"))
    bad = await tenant.post(
        "/v1/connectors",
        {"name": "x", "store": {**sftp_store(sftp_server, "/upload/c"), "port": 70000}},
    )
    assert bad.status == 422 and [e["field"] for e in bad.body["errors"]] == ["store.port"]
    unknown = await tenant.post("/v1/connectors", {"name": "x", "store": {"type": "ftp"}})
    assert unknown.status == 422 and unknown.body["errors"][0]["field"] == "store"
    first = await tenant.post(
        "/v1/connectors", {"name": "a", "store": sftp_store(sftp_server, "/upload/cyberdyne")}
    )
    assert first.status == 201
    nested = await tenant.post(
        "/v1/connectors", {"name": "b", "store": sftp_store(sftp_server, "/upload/cyberdyne/x")}
    )
    assert (
        nested.status == 409 and "'a'" in nested.body["detail"] and "'b'" in nested.body["detail"]
    )
    bad_patch = await tenant.patch(
        f"/v1/connectors/{first.body['id']}", {"poll": {"interval_seconds": -1}}
    )
    assert bad_patch.status == 422
    assert [e["field"] for e in bad_patch.body["errors"]] == ["poll.interval_seconds"]


async def test_config_file_connectors_are_listed_read_only(
    kafka: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp_path,
        [connector("from-file", sftp_config(sftp_server))],
        api={"operator_token": OPERATOR_TOKEN},
        processors={"enabled": False},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        key = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "k"})
        tenant = client.as_(key.body["key"])
        listed = await tenant.get("/v1/connectors")
        assert [(c["id"], c["origin"]) for c in listed.body["items"]] == [
            ("cfg_from-file", "config")
        ]
        assert listed.body["items"][0]["store"]["password"] == "**********"
        assert sftp_server.users["cs_pw"].password not in listed.text
        for reply in (
            await tenant.patch("/v1/connectors/cfg_from-file", {"enabled": False}),
            await tenant.delete("/v1/connectors/cfg_from-file"),
        ):
            assert reply.status == 409 and "edit the config file" in reply.body["detail"]
        assert "acme/from-file" in await running_names(client)


async def test_a_generated_key_pair_logs_in_once_its_public_key_is_installed(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer
) -> None:
    client, service, prefix = api
    tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "umbrella-corp"))
    store = sftp_store(sftp_server, "/upload/keyed", user="cs_key")
    created = await tenant.post(
        "/v1/connectors",
        {"name": "keyed", "generate_keypair": True, "store": store, "poll": FAST},
    )
    assert created.status == 201, created.text
    public_key = created.body["public_key"]
    assert public_key.startswith("ssh-ed25519 AAAA")
    assert public_key.endswith(" callstream-umbrella-corp-keyed")
    assert created.body["public_key_fingerprint"].startswith("SHA256:")
    assert created.body["store"]["private_key"] == "**********"

    async def refused() -> bool:
        c = (await running_names(client)).get("umbrella-corp/keyed")
        return c is not None and c["last_error_kind"] == "auth"

    await wait_until(refused)  # not installed yet: the server refuses the key
    authorized = sftp_server.authorized_keys("cs_key")
    original = authorized.read_text()
    reader = TopicReader(_bootstrap(service), Topics(prefix).file_arrivals)
    try:
        authorized.write_text(original + public_key + "\n")
        with sftp_session(sftp_server, "cs_key") as sftp:
            upload(sftp, "keyed/call.csv", b"a\n1\n")
        await reader.wait_for(
            lambda rs: any(r["tenant"] == "umbrella-corp" and r["path"] == "call.csv" for r in rs)
        )
        # A new key pair replaces the old one: the old public key no longer matters.
        again = await tenant.post(f"/v1/connectors/{created.body['id']}/keypair")
        assert again.status == 200 and again.body["public_key"] != public_key
        assert again.body["revision"] == 2
    finally:
        authorized.write_text(original)
        reader.close()


async def test_no_secret_in_any_response_log_line_or_table_row(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer, logs: Collected
) -> None:
    """Runs last in this module: searches everything the tests above produced too."""
    client, service, _prefix = api
    tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "initrode"))
    secret = "s3cr3t-" + "q" * 20
    created = await tenant.post(
        "/v1/connectors",
        {
            "name": "s3-in",
            "store": {
                "type": "s3",
                "bucket": "initrode-bucket",
                "endpoint_url": "http://127.0.0.1:9",
                "access_key_id": "AKIAEXAMPLE",
                "secret_access_key": secret,
                "session_token": secret + "-token",
            },
        },
    )
    assert created.status == 201, created.text
    assert created.body["secrets"] == {
        "store.secret_access_key": True,
        "store.session_token": True,
    }
    await tenant.patch(f"/v1/connectors/{created.body['id']}", {"enabled": False})
    await tenant.get("/v1/connectors")
    secrets = [secret, sftp_server.users["cs_pw"].password, "wrong-pw", "PRIVATE KEY"]
    async with service.state.engine.connect() as conn:
        rows = repr([tuple(r) for r in await conn.execute(select(connectors))])
        trail = repr([tuple(r) for r in await conn.execute(select(audit_log))])
    for value in secrets:
        assert value is not None
        assert all(value not in body for body in client.bodies), value
        assert value not in logs.text, value
        assert value not in rows and value not in trail, value
    assert "initrode" in rows and len(client.bodies) > 20  # the search had material


async def test_a_file_picked_up_by_an_api_connector_becomes_cases(
    kafka: str, sftp_server: SftpServer, tmp_path: Path, database_url: str
) -> None:
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp_path,
        [],
        database_url=database_url,
        api={"operator_token": OPERATOR_TOKEN, "connect_allow": ["127.0.0.1/32"]},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "globex"))
        created = await tenant.post(
            "/v1/connectors",
            {
                "name": "crm",
                "store": sftp_store(sftp_server, "/upload/globex"),
                "poll": {**FAST, "cleanup": "move"},
            },
        )
        assert created.status == 201, created.text
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "globex/20261120_conversations.csv", conversations_csv(50))
        assert service.cases is not None
        cases = service.cases

        async def all_cases() -> bool:
            return await cases.count_cases("globex") == 50

        await wait_until(all_cases, 60)
        moved = sftp_server.upload_dir("cs_pw") / "globex/processed/20261120_conversations.csv"
        await wait_until(lambda: asyncio.to_thread(moved.exists), 30)  # outcome reached it
        assert await cases.count_cases("acme") == 0


async def test_test_connection_reports_each_step_and_the_failing_one(
    api: tuple[Recorder, Service, str], sftp_server: SftpServer, clean_upload: Path
) -> None:
    client, _service, _prefix = api
    tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "acme-probe"))
    (clean_upload / "probe").mkdir()
    good = sftp_store(sftp_server, "/upload/probe")
    made = await tenant.post("/v1/connectors", {"name": "probe-ok", "store": good})
    assert made.status == 201, made.text

    report = await tenant.post(f"/v1/connectors/{made.body['id']}/test")
    assert report.status == 200, report.text
    assert report.body["ok"] is True, report.text
    steps = [(s["name"], s["status"]) for s in report.body["steps"]]
    assert steps == [
        ("resolve", "passed"),
        ("connect", "passed"),
        ("host_key", "passed"),
        ("authenticate", "passed"),
        ("list", "passed"),
    ]

    async def failing(store: dict[str, Any]) -> tuple[str | None, list[str]]:
        reply = await tenant.post("/v1/connector-tests", {"name": "probe", "store": store})
        assert reply.status == 200, reply.text
        assert reply.body["ok"] is False
        return reply.body["failed_step"], [s["status"] for s in reply.body["steps"]]

    wrong_password = {**good, "password": "not-the-password"}
    assert (await failing(wrong_password))[0] == "authenticate"
    other_key = public_key_line(new_private_key(), "another server")
    assert (await failing({**good, "host_key": other_key}))[0] == "host_key"
    assert (await failing({**good, "port": free_port()}))[0] == "connect"
    # A private address nobody allow-listed is refused before any connection is made.
    step, statuses = await failing({**good, "host": "10.255.255.1"})
    assert step == "resolve" and statuses[1:] == ["skipped"] * 4
    assert good["password"] not in report.text

    other = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "acme-probe-other"))
    assert (await other.post(f"/v1/connectors/{made.body['id']}/test")).status == 404


async def test_test_connection_reports_a_missing_bucket(
    api: tuple[Recorder, Service, str], s3_server: Any
) -> None:
    client, _service, _prefix = api
    tenant = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "acme-s3-probe"))
    store = {
        "type": "s3",
        "bucket": "no-such-bucket-anywhere",
        "endpoint_url": s3_server.endpoint_url,
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key,
        "addressing_style": "path",
    }
    reply = await tenant.post("/v1/connector-tests", {"name": "s3probe", "store": store})
    assert reply.status == 200, reply.text
    assert reply.body["failed_step"] == "head_bucket"
    assert store["secret_access_key"] not in reply.text
