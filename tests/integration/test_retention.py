"""Retention of processed originals on every store: old ones are archived (gzip) or purged,
fresh ones, the inbox and (unless asked) the invalid folder are left alone."""

from __future__ import annotations

import datetime as dt
import gzip
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.s3 import S3Server
from servers.sshd import SftpServer
from support import chown_tree, sftp_config

from connectors.base import FileStore
from connectors.local import LocalConfig, LocalStore
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpStore
from streams.retention import apply_retention
from streams.settings import ConnectorSettings, RetentionConfig, Settings

NOW = dt.datetime.now(dt.UTC)
OLD = (NOW - dt.timedelta(days=8)).timestamp()
FRESH = (NOW - dt.timedelta(days=1)).timestamp()
DATA = b"external_interaction_id,started_at\n" + b"CALL-1,2026-11-20T09:00:00Z\n" * 2000

#: (path, mtime) of the tree every store gets.
TREE = {
    "processed/exports/old.csv": OLD,
    "processed/exports/fresh.csv": FRESH,
    "processed/top.csv": OLD,
    "invalid/bad.csv": OLD,
    "inbox.csv": OLD,  # waiting to be processed: never retention's business
}

Reader = Callable[[str], bytes | None]


def _disk(root: Path, chown: bool) -> Reader:
    for path, mtime in TREE.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(DATA)
        os.utime(target, (mtime, mtime))
    if chown:
        chown_tree(root, root)
    return lambda p: (root / p).read_bytes() if (root / p).is_file() else None


@pytest.fixture(params=["local", "sftp", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], FileStore], Reader, dt.datetime]]:
    """(kind, a store factory, a reader of what the store holds, the 'now' to apply)."""
    if request.param == "local":
        root = tmp_path / "root"
        reader = _disk(root, chown=False)
        yield "local", lambda: LocalStore(LocalConfig(root=root)), reader, NOW
    elif request.param == "sftp":
        server: SftpServer = request.getfixturevalue("sftp_server")
        root = request.getfixturevalue("clean_upload")
        reader = _disk(root, chown=True)
        yield "sftp", lambda: SftpStore(sftp_config(server)), reader, NOW
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        client = s3.client()
        for path in TREE:  # S3 sets LastModified itself: judge them 8 days from now
            client.put_object(Bucket=bucket, Key=f"in/{path}", Body=DATA)
        config = S3Config(
            bucket=bucket,
            prefix="in",
            endpoint_url=s3.endpoint_url,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            addressing_style="path",
        )

        def read(path: str) -> bytes | None:
            try:
                return bytes(client.get_object(Bucket=bucket, Key=f"in/{path}")["Body"].read())
            except client.exceptions.NoSuchKey:
                return None

        yield "s3", lambda: S3Store(config), read, NOW + dt.timedelta(days=8)


def _connector(**retention: object) -> ConnectorSettings:
    return ConnectorSettings(
        name="crm",
        store=LocalConfig(root=Path("/unused")),
        retention=RetentionConfig.model_validate(retention),
    )


async def test_old_processed_originals_are_gzipped_into_the_archive_then_deleted(store) -> None:
    kind, make, read, now = store
    summary = await apply_retention(
        Settings(demo=False), "acme", _connector(action="archive"), make(), now
    )
    old = ["processed/exports/old.csv", "processed/top.csv"]
    if kind == "s3":  # 8 days ahead every processed file is old
        old.append("processed/exports/fresh.csv")
    assert (summary.archived, summary.failed, summary.errors) == (len(old), 0, [])
    assert summary.examined == 3
    for path in old:
        assert read(path) is None, f"{path} not deleted"
        archived = read(f"processed/archive/{path.removeprefix('processed/')}.gz")
        assert archived is not None and gzip.decompress(archived) == DATA
        assert len(archived) < len(DATA) / 10
    if kind != "s3":
        assert read("processed/exports/fresh.csv") == DATA
    assert read("inbox.csv") == DATA and read("invalid/bad.csv") == DATA

    again = await apply_retention(
        Settings(demo=False), "acme", _connector(action="archive"), make(), now
    )
    assert (again.archived, again.failed) == (0, 0), "the archive itself is never re-archived"


async def test_purge_deletes_old_originals_and_the_invalid_ones_when_asked(store) -> None:
    kind, make, read, now = store
    connector = _connector(action="purge", include_invalid=True)
    summary = await apply_retention(Settings(demo=False), "acme", connector, make(), now)
    assert summary.failed == 0
    assert summary.purged == (4 if kind == "s3" else 3)
    for path in ("processed/exports/old.csv", "processed/top.csv", "invalid/bad.csv"):
        assert read(path) is None
    assert read("inbox.csv") == DATA
    kept = await apply_retention(
        Settings(demo=False), "acme", _connector(action="keep"), make(), now
    )
    assert kept.examined == 0 and read("inbox.csv") == DATA


async def test_a_second_version_of_an_archived_path_keeps_the_first_archive(
    tmp_path: Path,
) -> None:
    """Same relative path archived twice: the first archive stays, the second is stamped."""
    root = tmp_path / "root"
    _disk(root, chown=False)
    connector = _connector(action="archive")
    store = LocalStore(LocalConfig(root=root))
    await apply_retention(Settings(demo=False), "acme", connector, store, NOW)
    (root / "processed/top.csv").write_bytes(b"second version\n")
    os.utime(root / "processed/top.csv", (OLD + 60, OLD + 60))
    await apply_retention(Settings(demo=False), "acme", connector, store, NOW)
    archive = root / "processed/archive"
    assert gzip.decompress((archive / "top.csv.gz").read_bytes()) == DATA
    [stamped] = [p for p in archive.glob("top.csv.*.gz")]
    assert gzip.decompress(stamped.read_bytes()) == b"second version\n"
    assert not (root / "processed/top.csv").exists()
