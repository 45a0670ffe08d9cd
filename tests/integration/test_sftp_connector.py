"""The SFTP connector against a real OpenSSH server and a real Kafka broker, end to end.

Each test runs the service in-process (``Service``: connector runner, producer, state store)
with its own topic prefix and reads what a downstream consumer would read from the
file-arrivals topic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path

import aiohttp
import paramiko
import pytest
from api_support import OPERATOR_TOKEN
from servers.sshd import SftpServer
from support import (
    TopicReader,
    connector,
    running,
    running_connectors,
    settings_for,
    sftp_config,
    sftp_session,
    upload,
)

from connectors.errors import NotARegularFile, UnsafePath
from connectors.sftp import SftpStore
from streams.topics import Topics

pytestmark = pytest.mark.usefixtures("clean_upload")


def _by_path(records: list[dict], path: str) -> list[dict]:
    return [r for r in records if r["path"] == path]


async def test_uploaded_file_is_announced_once_with_size_and_mtime(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    mtime = time.time() - 30
    data = b"external_interaction_id,channel\nCALL-1,voice\n" * 100
    with sftp_session(sftp_server) as sftp:
        upload(sftp, "daily/2026-11-20_conversations.csv", data, mtime=mtime)
    settings = settings_for(
        kafka, prefix, tmp_path, [connector("sftp-daily", sftp_config(sftp_server))]
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings):
            await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1.5)  # several more polls
            await asyncio.to_thread(reader.poll, 0.5)
    finally:
        reader.close()
    assert len(reader.records) == 1, reader.records
    event = reader.records[0]
    assert event["tenant"] == "acme"
    assert event["connector"] == "sftp-daily"
    assert event["store_type"] == "sftp"
    assert event["path"] == "daily/2026-11-20_conversations.csv"
    assert event["size"] == len(data)
    assert event["mtime"] == dt.datetime.fromtimestamp(int(mtime), dt.UTC)
    assert event["version"] == 1
    assert "password" not in event["store_uri"] and sftp_server.users["cs_pw"].password not in str(
        event
    )


async def test_file_still_being_appended_is_not_announced_until_stable(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    # A writer pausing longer than the poll interval shows the same size in two polls: the
    # minimum age on the (second-resolution) mtime is what holds the file back.
    sftp = connector("sftp", sftp_config(sftp_server), min_age_seconds=2)
    settings = settings_for(kafka, prefix, tmp_path, [sftp])
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    chunk = b"x" * 4096
    writes = 12
    try:
        async with running(settings):
            with sftp_session(sftp_server) as sftp, sftp.open("/upload/growing.csv", "wb") as fh:
                for _ in range(writes):
                    fh.write(chunk)
                    fh.flush()
                    await asyncio.sleep(0.4)  # longer than the 0.3 s poll interval
                    seen = await asyncio.to_thread(reader.poll, 0.05)
                    assert not seen, f"announced while still being written: {seen}"
            records = await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1)
            await asyncio.to_thread(reader.poll, 0.3)
    finally:
        reader.close()
    assert len(records) == 1
    assert records[0]["size"] == writes * len(chunk)


async def test_restart_does_not_reannounce_unchanged_files(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    with sftp_session(sftp_server) as sftp:
        for i in range(3):
            upload(sftp, f"calls/c{i}.csv", f"row {i}\n".encode(), mtime=time.time() - 60)
    settings = settings_for(kafka, prefix, tmp_path, [connector("sftp", sftp_config(sftp_server))])
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings):
            await reader.wait_for(lambda rs: len(rs) >= 3)
        async with running(settings):  # same database: a restart
            await asyncio.sleep(2)  # several polls of unchanged files
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "calls/new.csv", b"after restart\n", mtime=time.time() - 60)
            await reader.wait_for(lambda rs: any(r["path"] == "calls/new.csv" for r in rs))
            await asyncio.to_thread(reader.poll, 0.5)
    finally:
        reader.close()
    paths = sorted(r["path"] for r in reader.records)
    assert paths == ["calls/c0.csv", "calls/c1.csv", "calls/c2.csv", "calls/new.csv"]


async def test_reupload_with_new_content_is_a_new_version(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = settings_for(kafka, prefix, tmp_path, [connector("sftp", sftp_config(sftp_server))])
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    path = "meta/20201012-140253_joe.xml"
    first_mtime = time.time() - 120
    try:
        async with running(settings):
            with sftp_session(sftp_server) as sftp:
                upload(sftp, path, b"<call><stage>open</stage></call>", mtime=first_mtime)
            await reader.wait_for(lambda rs: len(rs) >= 1)
            with sftp_session(sftp_server) as sftp:  # same bytes, same mtime: not a new version
                upload(sftp, path, b"<call><stage>open</stage></call>", mtime=first_mtime)
            await asyncio.sleep(1.5)
            with sftp_session(sftp_server) as sftp:  # the CRM updated the metadata
                upload(sftp, path, b"<call><stage>closed-won</stage></call>", mtime=time.time() - 5)
            await reader.wait_for(lambda rs: len(rs) >= 2)
            await asyncio.sleep(1)
            await asyncio.to_thread(reader.poll, 0.3)
    finally:
        reader.close()
    events = _by_path(reader.records, path)
    assert [e["version"] for e in events] == [1, 2]
    assert events[0]["version_id"] != events[1]["version_id"]
    assert events[0]["file_id"] != events[1]["file_id"]
    assert events[1]["size"] == len(b"<call><stage>closed-won</stage></call>")


async def test_symlinks_fifos_and_dotdot_never_leave_the_root(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    folder = sftp_server.upload_dir("cs_pw")
    other_tenant = sftp_server.upload_dir("cs_key") / "secret.csv"
    other_tenant.write_text("other tenant's data\n")
    (folder / "to-other-tenant.csv").symlink_to(other_tenant)
    (folder / "passwd.csv").symlink_to("/etc/passwd")
    (folder / "escape").symlink_to("/")
    os.mkfifo(folder / "pipe.csv")
    with sftp_session(sftp_server) as sftp:
        upload(sftp, "real.csv", b"ok\n", mtime=time.time() - 60)
    metrics_body = ""
    settings = settings_for(kafka, prefix, tmp_path, [connector("sftp", sftp_config(sftp_server))])
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings) as service:
            await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1)
            await asyncio.to_thread(reader.poll, 0.3)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{service.http_url}/metrics") as resp,
            ):
                metrics_body = await resp.text()
    finally:
        reader.close()
        other_tenant.unlink()
    assert [r["path"] for r in reader.records] == ["real.csv"]
    assert 'reason="symlink"' in metrics_body and 'reason="special_file"' in metrics_body

    store = SftpStore(sftp_config(sftp_server))
    with store:
        for bad in ("../cs_key/upload/secret.csv", "/etc/passwd", "a/../../x"):
            with pytest.raises(UnsafePath):
                store.open(bad)
        for link in ("to-other-tenant.csv", "passwd.csv", "pipe.csv"):
            with pytest.raises(NotARegularFile):
                store.open(link)


async def test_wrong_host_key_and_wrong_password_fail_clearly_others_keep_working(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path
) -> None:
    impostor = paramiko.ECDSAKey.generate()  # a server we never pinned
    wrong_pin = f"{impostor.get_name()} {impostor.get_base64()}"
    good = connector("good", sftp_config(sftp_server, "cs_key"))
    bad_key = connector("bad-host-key", sftp_config(sftp_server, host_key=wrong_pin))
    bad_pw = connector(  # its own folder: two connectors may not watch the same one
        "bad-password",
        sftp_config(sftp_server, password="not-the-password", root="/elsewhere"),
    )
    key_upload = sftp_server.upload_dir("cs_key")
    (key_upload / "keep-working.csv").write_text("still flowing\n")
    old = time.time() - 60
    os.utime(key_upload / "keep-working.csv", (old, old))
    settings = settings_for(
        kafka, prefix, tmp_path, [good, bad_key, bad_pw], api={"operator_token": OPERATOR_TOKEN}
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings) as service:
            await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1)  # a few back-off rounds of the failing connectors
            status = {c["connector"]: c for c in await running_connectors(service)}
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{service.http_url}/metrics") as resp,
            ):
                metrics_body = await resp.text()
    finally:
        reader.close()
        (key_upload / "keep-working.csv").unlink()
    assert [(r["connector"], r["path"]) for r in reader.records] == [("good", "keep-working.csv")]
    assert status["good"]["state"] == "ok"
    assert status["bad-host-key"]["state"] == "error"
    assert status["bad-host-key"]["last_error_kind"] == "host_key"
    assert sftp_server.host_key_fingerprint in status["bad-host-key"]["last_error"]
    assert status["bad-password"]["state"] == "error"
    assert status["bad-password"]["last_error_kind"] == "auth"
    assert "rejected password authentication" in status["bad-password"]["last_error"]
    assert "not-the-password" not in str(status)
    assert 'connector="bad-host-key",kind="host_key"' in metrics_body
    assert 'connector="bad-password",kind="auth"' in metrics_body
