"""Export connectors through the running service's /v1 API, and deliveries to them, against the
real OpenSSH sftp server, moto's S3 server and aiosmtpd.

What a tenant notices: export connectors are created, listed, changed and deleted; another
tenant's do not exist for them; no secret ever comes back; the connection test writes (and
removes) a probe and names the step that fails; a delivery puts the report files on the SFTP
server or in the bucket, or mails the download links (never an attachment); a destination that
is down gives a failed delivery with a clear error instead of an exception.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, new_tenant, s3_target, sftp_target
from fixtures import mail_settings
from servers.s3 import S3Server
from servers.smtp import SmtpServer
from servers.sshd import SftpServer
from sqlalchemy import select
from support import free_port, running, settings_for, unique_prefix
from test_api_connectors import Recorder

from streams.control.audit import audit_log
from streams.control.destinations import (
    Destination,
    EmailConfig,
    ExportConnectorSettings,
    export_connectors,
    get_destination,
)
from streams.control.errors import NotFoundError
from streams.exports.deliver import DeliveryFile, DeliveryLink, check_destination, deliver
from streams.service import Service
from streams.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("clean_upload")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(
    kafka: str,
    sftp_server: SftpServer,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Recorder, Service]]:
    """A running service (SQLite, no processors), loopback allowed for the test servers."""
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp_path_factory.mktemp("exportapi"),
        [],
        api={"operator_token": OPERATOR_TOKEN, "connect_allow": ["127.0.0.1/32"]},
        mail=mail_settings(smtp_server),
        processors={"enabled": False},
    )
    async with running(settings) as service:
        client = Recorder(service.http_url or "")
        client.bodies = []
        async with client:
            yield client, service


async def tenant_client(client: Recorder, name: str) -> Recorder:
    return client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), name))


# -- CRUD, isolation, secrets -------------------------------------------------------------------


async def test_crud_isolation_and_masked_secrets(
    api: tuple[Recorder, Service], sftp_server: SftpServer, s3_server: S3Server, s3_bucket: str
) -> None:
    client, service = api
    acme = await tenant_client(client, "exp-acme")
    other = await tenant_client(client, "exp-other")
    password = sftp_server.users["cs_pw"].password
    assert password is not None

    sftp = await acme.post(
        "/v1/export-connectors", {"name": "quality-sftp", "config": sftp_target(sftp_server)}
    )
    assert sftp.status == 201, sftp.text
    assert sftp.body["id"].startswith("exp_") and len(sftp.body["id"]) == 20
    assert sftp.body["config"]["password"] == "**********"
    assert sftp.body["secrets"] == {
        "config.password": True,
        "config.private_key": False,
        "config.private_key_passphrase": False,
    }
    s3 = await acme.post(
        "/v1/export-connectors", {"name": "bucket", "config": s3_target(s3_server, s3_bucket)}
    )
    assert s3.status == 201, s3.text
    mail = await acme.post(
        "/v1/export-connectors",
        {
            "name": "mail",
            "config": {"type": "email", "to": ["qa@acme.example", "QA@acme.example", "b@x.io"]},
        },
    )
    assert mail.status == 201, mail.text
    assert mail.body["config"]["to"] == ["qa@acme.example", "b@x.io"]  # duplicates dropped
    again = await acme.post(
        "/v1/export-connectors", {"name": "mail", "config": {"type": "email", "to": ["a@b.io"]}}
    )
    assert again.status == 409

    first = await acme.get("/v1/export-connectors", params={"limit": "2"})
    assert [c["name"] for c in first.body["items"]] == ["bucket", "mail"]
    rest = await acme.get(
        "/v1/export-connectors", params={"limit": "2", "cursor": first.body["next_cursor"]}
    )
    assert [c["name"] for c in rest.body["items"]] == ["quality-sftp"]
    assert rest.body["next_cursor"] is None

    sid = sftp.body["id"]
    kept = await acme.patch(
        f"/v1/export-connectors/{sid}", {"config": {"password": "**********", "port": 2}}
    )
    assert kept.status == 200, kept.text
    assert kept.body["revision"] == 2 and kept.body["config"]["port"] == 2
    stored = await get_destination(service.api.engine, service.secrets, "exp-acme", sid)
    assert stored.config.type == "sftp" and stored.config.password is not None
    assert stored.config.password.get_secret_value() == password  # the mask kept the value
    renamed = await acme.patch(f"/v1/export-connectors/{sid}", {"name": "renamed"})
    assert renamed.status == 200 and renamed.body["name"] == "renamed"
    taken = await acme.patch(f"/v1/export-connectors/{sid}", {"name": "bucket"})
    assert taken.status == 409, taken.text
    switched = await acme.patch(
        f"/v1/export-connectors/{sid}", {"config": {"type": "email", "to": ["x@acme.example"]}}
    )
    assert switched.status == 200, switched.text
    assert switched.body["config"] == {"type": "email", "to": ["x@acme.example"]}
    assert switched.body["secrets"] == {}

    # Another tenant: every route naming acme's connectors is a 404, its list is empty.
    for method, path, body in [
        ("GET", f"/v1/export-connectors/{sid}", None),
        ("PATCH", f"/v1/export-connectors/{sid}", {"enabled": False}),
        ("DELETE", f"/v1/export-connectors/{s3.body['id']}", None),
        ("POST", f"/v1/export-connectors/{s3.body['id']}/test", None),
    ]:
        reply = await other.call(method, path, body)
        assert reply.status == 404, (method, path, reply.text)
        assert s3_bucket not in reply.text
    assert (await other.get("/v1/export-connectors")).body["items"] == []
    with pytest.raises(NotFoundError):
        await get_destination(service.api.engine, service.secrets, "exp-other", sid)

    deleted = await acme.delete(f"/v1/export-connectors/{s3.body['id']}")
    assert deleted.status == 204
    assert (await acme.get(f"/v1/export-connectors/{s3.body['id']}")).status == 404

    async with service.api.engine.connect() as conn:
        rows = json.dumps(
            [list(r) for r in await conn.execute(select(export_connectors))], default=str
        )
        trail = json.dumps([list(r) for r in await conn.execute(select(audit_log))], default=str)
    for secret in (password, s3_server.secret_access_key):
        assert all(secret not in body for body in client.bodies)
        assert secret not in rows and secret not in trail


async def test_api_rules_and_validation(
    api: tuple[Recorder, Service], sftp_server: SftpServer
) -> None:
    client, _service = api
    acme = await tenant_client(client, "exp-rules")
    target = sftp_target(sftp_server)
    del target["password"]
    bad = {
        "config.private_key_path": {**target, "private_key_path": "/etc/ssh/ssh_host_ed25519_key"},
        "config": {"type": "local", "root": "/tmp"},
        "config.to": {"type": "email", "to": [f"a{i}@acme.example" for i in range(21)]},
        "config.to.0": {"type": "email", "to": ["not an address"]},
    }
    for field, config in bad.items():
        reply = await acme.post("/v1/export-connectors", {"name": "x", "config": config})
        assert reply.status == 422, (field, reply.text)
        fields = [e["field"] for e in reply.body["errors"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    generated = await acme.post(
        "/v1/export-connectors", {"name": "keyed", "config": target, "generate_keypair": True}
    )
    assert generated.status == 201, generated.text
    assert generated.body["public_key"].startswith("ssh-ed25519 ")
    assert generated.body["public_key_fingerprint"].startswith("SHA256:")
    assert generated.body["config"]["private_key"] == "**********"


# -- connection tests ---------------------------------------------------------------------------


def _steps(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["name"], s["status"]) for s in report["steps"]]


async def test_sftp_test_writes_and_removes_a_probe_and_names_the_failing_step(
    api: tuple[Recorder, Service], sftp_server: SftpServer, clean_upload: Path
) -> None:
    client, service = api
    acme = await tenant_client(client, "exp-sftp-test")
    made = await acme.post(
        "/v1/export-connectors", {"name": "out", "config": sftp_target(sftp_server)}
    )
    report = await acme.post(f"/v1/export-connectors/{made.body['id']}/test")
    assert report.status == 200 and report.body["ok"] is True, report.text
    assert _steps(report.body) == [
        (name, "passed")
        for name in ("resolve", "connect", "host_key", "authenticate", "write", "delete")
    ]
    assert ".callstream-probe-" in report.body["steps"][4]["message"]
    assert list(clean_upload.iterdir()) == []  # the probe file is gone

    async def failed(config: dict[str, Any]) -> dict[str, Any]:
        reply = await acme.post("/v1/export-connector-tests", {"name": "t", "config": config})
        assert reply.status == 200, reply.text
        assert reply.body["ok"] is False
        return dict(reply.body)

    good = sftp_target(sftp_server)
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVz"
    cases = {
        "host_key": {**good, "host_key": other_key},
        "authenticate": {**good, "password": "not-the-password"},
        "connect": {**good, "port": free_port()},
        "write": {**good, "root": "/upload/missing-folder"},
    }
    for step, config in cases.items():
        report_body = await failed(config)
        assert report_body["failed_step"] == step, report_body
        failing = next(s for s in report_body["steps"] if s["name"] == step)
        assert failing["message"] and "not-the-password" not in json.dumps(report_body)

    # Without connect_allow, loopback is refused at resolve: nothing is connected.
    strict = service.settings.model_copy(
        update={"api": service.settings.api.model_copy(update={"connect_allow": []})}
    )
    config = ExportConnectorSettings.model_validate({"name": "t", "config": good}).config
    refused = await check_destination(strict, config)
    assert refused.failed_step == "resolve"
    assert refused.steps[0].detail["error"] == "address_refused"


async def test_s3_test_puts_and_deletes_a_probe_and_needs_the_put_right(
    api: tuple[Recorder, Service], s3_server: S3Server, s3_bucket: str
) -> None:
    client, _service = api
    acme = await tenant_client(client, "exp-s3-test")

    async def report(config: dict[str, Any]) -> dict[str, Any]:
        reply = await acme.post("/v1/export-connector-tests", {"name": "t", "config": config})
        assert reply.status == 200, reply.text
        return dict(reply.body)

    ok = await report(s3_target(s3_server, s3_bucket))
    assert ok["ok"] is True, ok
    assert _steps(ok) == [("resolve", "passed"), ("write", "passed"), ("delete", "passed")]
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0

    put_only = s3_server.restricted_key(["s3:PutObject", "s3:DeleteObject"])
    writer = await report(
        s3_target(s3_server, s3_bucket, access_key_id=put_only[0], secret_access_key=put_only[1])
    )
    assert writer["ok"] is True, writer  # an export key needs no list or read right

    read_only = s3_server.restricted_key(["s3:ListBucket", "s3:GetObject"])
    denied = await report(
        s3_target(s3_server, s3_bucket, access_key_id=read_only[0], secret_access_key=read_only[1])
    )
    assert denied["failed_step"] == "write", denied
    assert "access denied" in denied["steps"][1]["message"]
    assert read_only[1] not in json.dumps(denied)

    missing = await report(s3_target(s3_server, "no-such-bucket-7c1e"))
    assert missing["failed_step"] == "write"
    assert "does not exist" in missing["steps"][1]["message"]


async def test_email_test_checks_the_relay_and_names_the_failing_step(
    api: tuple[Recorder, Service], smtp_server: SmtpServer
) -> None:
    client, service = api
    acme = await tenant_client(client, "exp-mail-test")
    before = len(smtp_server.messages)
    reply = await acme.post(
        "/v1/export-connector-tests",
        {"name": "t", "config": {"type": "email", "to": ["qa@acme.example"]}},
    )
    assert reply.status == 200 and reply.body["ok"] is True, reply.text
    assert _steps(reply.body) == [
        (name, "passed") for name in ("addresses", "connect", "ehlo", "starttls", "auth")
    ]
    assert len(smtp_server.messages) == before  # nothing was sent

    config = EmailConfig(to=["qa@acme.example"])
    for overrides, step in [
        ({"password": "wrong-smtp-password"}, "auth"),
        ({"port": free_port()}, "connect"),
        ({"host": None}, "connect"),
    ]:
        settings = _with_mail(service.settings, smtp_server, **overrides)
        report = await check_destination(settings, config)
        assert report.failed_step == step, report
        assert "wrong-smtp-password" not in report.model_dump_json()


def _with_mail(settings: Settings, server: SmtpServer, **overrides: object) -> Settings:
    data = settings.model_dump()
    data["mail"] = mail_settings(server, **overrides)
    return Settings.model_validate(data)


# -- delivery -----------------------------------------------------------------------------------


def _files(tmp_path: Path) -> list[DeliveryFile]:
    out = []
    for i, body in enumerate([b"case_id,score\nC1,90\n", b"case_id,score\nC2,=1+1\n"], 1):
        path = tmp_path / f"part-{i}.csv"
        path.write_bytes(body)
        out.append(DeliveryFile(path, f"report-2026-11-20-{i}.csv", 1, len(body), "text/csv"))
    return out


def _destination(config: Any, enabled: bool = True) -> Destination:
    settings = ExportConnectorSettings.model_validate({"name": "d", "config": config})
    return Destination("exp_0000000000000001", "acme", "d", enabled, 1, settings.config)


async def test_delivery_to_sftp_and_s3_puts_each_file(
    api: tuple[Recorder, Service],
    sftp_server: SftpServer,
    s3_server: S3Server,
    s3_bucket: str,
    clean_upload: Path,
    tmp_path: Path,
) -> None:
    _client, service = api
    files = _files(tmp_path)
    names = [f.name for f in files]
    to_sftp = await deliver(
        service.settings, _destination(sftp_target(sftp_server)), files, [], subject="x"
    )
    assert to_sftp.ok is True and to_sftp.error is None, to_sftp
    assert to_sftp.delivered == names
    assert sorted(p.name for p in clean_upload.iterdir()) == names  # no temporary file left
    assert (clean_upload / names[1]).read_bytes() == files[1].path.read_bytes()

    to_s3 = await deliver(
        service.settings, _destination(s3_target(s3_server, s3_bucket)), files, [], subject="x"
    )
    assert to_s3.ok is True and to_s3.delivered == names, to_s3
    s3 = s3_server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"reports/daily/{n}" for n in names]
    obj = s3.get_object(Bucket=s3_bucket, Key=f"reports/daily/{names[0]}")
    assert obj["Body"].read() == files[0].path.read_bytes()
    assert obj["ContentType"] == "text/csv"


async def test_email_delivery_mails_the_links_and_no_attachment(
    api: tuple[Recorder, Service], smtp_server: SmtpServer
) -> None:
    _client, service = api
    expires = dt.datetime(2026, 11, 27, 2, 30, tzinfo=dt.UTC)
    links = [
        DeliveryLink(
            f"report-{i}.csv", rows, f"http://cs.example/v1/reports/r{i}?sig=s{i}", expires
        )
        for i, rows in enumerate([1000, 1000, 500], 1)
    ]
    destination = _destination({"type": "email", "to": ["links@acme.example", "two@acme.example"]})
    outcome = await deliver(service.settings, destination, [], links, subject="Daily QA export")
    assert outcome.ok is True, outcome
    assert outcome.delivered == [link.name for link in links]
    mails = smtp_server.wait_for(lambda m: m["Subject"] == "Daily QA export")
    assert len(mails) == 1
    mail = mails[0]
    assert set(mail["X-Envelope-To"].split(", ")) == {"links@acme.example", "two@acme.example"}
    assert not mail.is_multipart() and not list(mail.iter_attachments())
    text = mail.get_content()
    for link in links:
        assert link.url in text and f"{link.name} ({link.rows} rows)" in text
    assert "2026-11-27 02:30 UTC" in text


async def test_a_down_destination_is_a_failed_delivery_not_an_exception(
    api: tuple[Recorder, Service],
    sftp_server: SftpServer,
    smtp_server: SmtpServer,
    clean_upload: Path,
    tmp_path: Path,
) -> None:
    _client, service = api
    files = _files(tmp_path)
    down = _destination(sftp_target(sftp_server, port=free_port()))
    outcome = await deliver(service.settings, down, files, [], subject="x")
    assert outcome.ok is False and outcome.delivered == []
    assert outcome.error is not None and "connecting to" in outcome.error

    wrong_key = _destination(
        sftp_target(
            sftp_server,
            host_key="SHA256:" + "A" * 43,
        )
    )
    refused = await deliver(service.settings, wrong_key, files, [], subject="x")
    assert refused.ok is False and "host key" in (refused.error or "")

    missing_root = _destination(sftp_target(sftp_server, root="/upload/nope"))
    nowhere = await deliver(service.settings, missing_root, files, [], subject="x")
    assert nowhere.ok is False and "does not exist" in (nowhere.error or ""), nowhere

    strict = service.settings.model_copy(
        update={"api": service.settings.api.model_copy(update={"connect_allow": []})}
    )
    guarded = await deliver(strict, _destination(sftp_target(sftp_server)), files, [], subject="x")
    assert guarded.ok is False and "127.0.0.1" in (guarded.error or ""), guarded
    assert list(clean_upload.iterdir()) == []  # nothing was written

    mail_off = _with_mail(service.settings, smtp_server, host=None)
    link = DeliveryLink("r.csv", 1, "http://x/r", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    mailed = await deliver(
        mail_off, _destination({"type": "email", "to": ["a@b.io"]}), [], [link], subject="x"
    )
    assert mailed.ok is False and "mail is off" in (mailed.error or "")

    disabled = _destination({"type": "email", "to": ["a@b.io"]}, enabled=False)
    skipped = await deliver(service.settings, disabled, [], [link], subject="x")
    assert skipped.ok is False and "disabled" in (skipped.error or "")
