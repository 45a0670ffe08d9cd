"""The hosted SFTP drop box through the running service, driven by OpenSSH's ``sftp`` and by
paramiko: uploads are announced at once (not at the connector's 30 s poll) and become cases;
quotas, the allow-list, confinement and tenant isolation hold."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from dropbox_support import (
    Login,
    known_hosts,
    new_login,
    openssh_batch,
    paramiko_session,
)
from support import TopicReader, conversations_csv, running, settings_for, unique_prefix

from streams.service import Service
from streams.topics import Topics

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW_POLL = {"interval_seconds": 30, "min_age_seconds": 20}
"""Without the drop box's wake-up, nothing would be announced within a test's patience."""


@dataclass
class World:
    service: Service
    tmp: Path
    alpha: ApiClient
    beta: ApiClient
    arrivals: TopicReader
    results: TopicReader
    login: Login
    other: Login
    known: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("dropbox")
    prefix = unique_prefix()
    settings = settings_for(
        kafka,
        prefix,
        tmp / "data",
        [],
        api={"operator_token": OPERATOR_TOKEN},
        dropbox={"enabled": True, "port": 0},
    )
    topics = Topics(prefix)
    arrivals = TopicReader(kafka, topics.file_arrivals)
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        operator = client.as_(OPERATOR_TOKEN)
        alpha = client.as_(await new_tenant(operator, "dbx-alpha"))
        beta = client.as_(await new_tenant(operator, "dbx-beta"))
        login = await new_login(
            alpha, settings.data_dir, "dbx-alpha", "alpha-up", tmp, poll=SLOW_POLL
        )
        other = await new_login(beta, settings.data_dir, "dbx-beta", "beta-up", tmp, poll=SLOW_POLL)
        await _running(service, "dbx-alpha", "alpha-up")
        await _running(service, "dbx-beta", "beta-up")
        yield World(
            service,
            tmp,
            alpha,
            beta,
            arrivals,
            results,
            login,
            other,
            known_hosts(service, tmp / "known_hosts"),
        )
    arrivals.close()
    results.close()


async def _running(service: Service, tenant: str, connector: str) -> None:
    deadline = time.monotonic() + 10
    while (tenant, connector) not in service.runner.contexts:
        assert time.monotonic() < deadline, f"connector {tenant}/{connector} never started"
        await asyncio.sleep(0.1)


def _put(sftp: paramiko.SFTPClient, path: str, data: bytes) -> float:
    """Upload ``data``; return the wall-clock time the client started closing the file."""
    with sftp.open(path, "wb") as f:
        f.write(data)
        closing = time.time()
    return closing


def _arrivals_of(world: World, path: str) -> list[dict[str, object]]:
    return [r for r in world.arrivals.records if r["path"] == path and r["tenant"] == "dbx-alpha"]


async def test_openssh_sftp_upload_is_announced_at_once_and_opens_a_case(world: World) -> None:
    local = world.tmp / "openssh.csv"
    local.write_bytes(conversations_csv(3, start=7100))
    done = await asyncio.to_thread(
        openssh_batch,
        world.service,
        world.login,
        world.known,
        ["cd data", "put openssh.csv", "ls -l"],
        world.tmp,
    )
    finished = time.time()
    assert done.returncode == 0, done.stderr
    assert "openssh.csv" in done.stdout
    found = await world.arrivals.wait_for(lambda _r: bool(_arrivals_of(world, "data/openssh.csv")))
    arrival = _arrivals_of(world, "data/openssh.csv")[0]
    assert arrival["announced_at"].timestamp() < finished + 1.0, found  # type: ignore[attr-defined]
    await world.results.wait_for(
        lambda rs: {r["external_interaction_id"] for r in rs} >= {"CALL-007100", "CALL-007102"},
        timeout=60,
    )


async def test_paramiko_upload_is_announced_within_a_second_of_close_once_per_version(
    world: World,
) -> None:
    transport, sftp = await asyncio.to_thread(paramiko_session, world.service, world.login)
    try:
        first = await asyncio.to_thread(_put, sftp, "data/calls.csv", conversations_csv(2, 7200))
        await world.arrivals.wait_for(lambda _r: len(_arrivals_of(world, "data/calls.csv")) == 1)
        await asyncio.sleep(1.1)  # a new mtime second: the re-upload is a new version
        second = await asyncio.to_thread(_put, sftp, "data/calls.csv", conversations_csv(3, 7300))
        await world.arrivals.wait_for(lambda _r: len(_arrivals_of(world, "data/calls.csv")) == 2)
    finally:
        transport.close()
    await asyncio.to_thread(world.arrivals.poll, 2.0)  # nothing more comes
    versions = _arrivals_of(world, "data/calls.csv")
    assert [v["version"] for v in versions] == [1, 2]
    for closed, arrival in zip((first, second), versions, strict=True):
        latency = arrival["announced_at"].timestamp() - closed  # type: ignore[attr-defined]
        assert latency < 1.0, f"announced {latency:.3f}s after close"
    listed = await world.alpha.get("/v1/files", params={"connector": world.login.username})
    assert listed.status == 200, listed.text


async def test_key_login_and_what_the_layout_refuses(world: World) -> None:
    transport, sftp = await asyncio.to_thread(
        paramiko_session, world.service, world.login, use_key=True
    )
    try:
        assert "data" in await asyncio.to_thread(sftp.listdir, "/")
        for attempt in (
            lambda: sftp.mkdir("data/sub"),  # seed 003: no folders in the upload folder
            lambda: sftp.mkdir("elsewhere"),
            lambda: _put(sftp, "top.csv", b"a,b\n"),  # only data/ takes uploads
            lambda: _put(sftp, "processed/x.csv", b"a,b\n"),
        ):
            with pytest.raises(OSError):
                await asyncio.to_thread(attempt)
    finally:
        transport.close()


async def test_traversal_absolute_paths_and_links_fail(world: World) -> None:
    secret = world.tmp / "secret.txt"
    secret.write_text("not yours")
    transport, sftp = await asyncio.to_thread(paramiko_session, world.service, world.login)
    try:
        for attempt in (
            lambda: sftp.open("../../secret.txt").read(),
            lambda: sftp.open("/data/../../secret.txt").read(),
            lambda: sftp.listdir("/.."),
            lambda: sftp.stat(str(secret)),  # an absolute path of the machine is not there
            lambda: sftp.open("/etc/passwd").read(),
            lambda: _put(sftp, "data/../../escape.csv", b"a\n"),
            lambda: sftp.symlink(str(secret), "data/link.csv"),
            lambda: sftp.symlink("/etc/passwd", "data/link2.csv"),
        ):
            with pytest.raises(OSError):
                await asyncio.to_thread(attempt)
    finally:
        transport.close()
    assert not (world.tmp / "escape.csv").exists()
    assert not list(world.login.folder.rglob("link*"))
    done = await asyncio.to_thread(
        openssh_batch,
        world.service,
        world.login,
        world.known,
        ["get ../../secret.txt stolen.txt"],
        world.tmp,
    )
    assert done.returncode != 0
    assert not (world.tmp / "stolen.txt").exists()


async def test_another_tenants_files_are_invisible(world: World) -> None:
    (world.login.folder / "data" / "alpha-only.csv").write_bytes(b"x\n")
    transport, sftp = await asyncio.to_thread(paramiko_session, world.service, world.other)
    try:
        assert "alpha-only.csv" not in await asyncio.to_thread(sftp.listdir, "/data")
        for attempt in (
            lambda: sftp.stat("/data/alpha-only.csv"),
            lambda: sftp.open("../../dbx-alpha/alpha-up/data/alpha-only.csv").read(),
        ):
            with pytest.raises(OSError):
                await asyncio.to_thread(attempt)
    finally:
        transport.close()
    seen = await world.beta.get(f"/v1/dropbox/accounts/{world.login.account_id}")
    assert seen.status == 404


async def test_quota_exceeded_mid_upload_is_refused_and_never_announced(world: World) -> None:
    small = await new_login(
        world.alpha,
        world.service.settings.data_dir,
        "dbx-alpha",
        "alpha-small",
        world.tmp,
        poll={"interval_seconds": 0.3, "min_age_seconds": 0},  # would announce a partial file
        workspace_quota_bytes=50_000,
    )
    await _running(world.service, "dbx-alpha", "alpha-small")
    transport, sftp = await asyncio.to_thread(paramiko_session, world.service, small)
    try:
        with pytest.raises(OSError, match="quota exceeded"):
            await asyncio.to_thread(_put, sftp, "data/big.csv", conversations_csv(2000, 8000))
        assert "big.csv" not in await asyncio.to_thread(sftp.listdir, "/data")
        await asyncio.to_thread(_put, sftp, "data/fits.csv", conversations_csv(2, 9000))
    finally:
        transport.close()
    assert sorted(p.name for p in (small.folder / "data").iterdir()) == ["fits.csv"]
    await world.arrivals.wait_for(
        lambda rs: any(r["path"] == "data/fits.csv" and r["connector"] == "alpha-small" for r in rs)
    )
    await asyncio.to_thread(world.arrivals.poll, 1.0)
    assert not [r for r in world.arrivals.records if r["path"] == "data/big.csv"]


async def test_daily_quota_is_durable_and_refuses_the_upload_past_it(world: World) -> None:
    daily = await new_login(
        world.alpha,
        world.service.settings.data_dir,
        "dbx-alpha",
        "alpha-daily",
        world.tmp,
        daily_quota_bytes=3000,
    )
    transport, sftp = await asyncio.to_thread(paramiko_session, world.service, daily)
    try:
        await asyncio.to_thread(_put, sftp, "data/one.csv", b"x" * 2000)
        with pytest.raises(OSError, match="quota exceeded"):
            await asyncio.to_thread(_put, sftp, "data/two.csv", b"y" * 2000)
    finally:
        transport.close()
    shown = await world.alpha.get(f"/v1/dropbox/accounts/{daily.account_id}")
    assert shown.status == 200
    assert 2000 <= shown.body["uploaded_today_bytes"] <= 3000
    assert shown.body["daily_quota_bytes"] == 3000
    assert not (daily.folder / "data" / "two.csv").exists()


async def test_an_address_outside_the_allow_list_cannot_log_in(world: World) -> None:
    fenced = await new_login(
        world.alpha,
        world.service.settings.data_dir,
        "dbx-alpha",
        "alpha-fenced",
        world.tmp,
        allow_from=["10.0.0.0/8"],
    )
    for use_key in (False, True):
        with pytest.raises(paramiko.AuthenticationException):
            await asyncio.to_thread(paramiko_session, world.service, fenced, use_key=use_key)
    done = await asyncio.to_thread(
        openssh_batch, world.service, fenced, world.known, ["ls"], world.tmp
    )
    assert done.returncode != 0
    allowed = await world.alpha.patch(
        f"/v1/dropbox/accounts/{fenced.account_id}", {"allow_from": ["127.0.0.1"]}
    )
    assert allowed.status == 200, allowed.text
    transport, _sftp = await asyncio.to_thread(paramiko_session, world.service, fenced)
    transport.close()


async def test_wrong_password_and_unknown_user_fail(world: World) -> None:
    wrong = Login(
        world.login.username, "not-the-password", world.login.key_path, "", "", world.login.folder
    )
    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(paramiko_session, world.service, wrong)
    nobody = Login("nobody-here", "whatever-password", world.login.key_path, "", "", world.tmp)
    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(paramiko_session, world.service, nobody)


async def test_an_upload_whose_session_drops_before_close_is_discarded(world: World) -> None:
    def drop() -> None:
        transport, sftp = paramiko_session(world.service, world.login)
        f = sftp.open("data/dropped.csv", "wb")
        f.write(conversations_csv(50, 9500))
        f.flush()
        transport.close()  # gone without closing the file

    await asyncio.to_thread(drop)
    deadline = time.monotonic() + 5
    while any((world.login.folder / "data").glob(".dropped.csv.*")):
        assert time.monotonic() < deadline, "the temporary upload was not removed"
        await asyncio.sleep(0.1)
    assert not (world.login.folder / "data" / "dropped.csv").exists()
    started = dt.datetime.now(dt.UTC)
    await asyncio.to_thread(world.arrivals.poll, 1.0)
    assert not [r for r in world.arrivals.records if r["path"] == "data/dropped.csv"], started
