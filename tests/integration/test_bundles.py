"""Recording + metadata bundles end to end: files on a real store, the service in-process against
the real broker, cases in PostgreSQL (or SQLite), results on the feedback topic.

The store is a fixture parameter (``sftp``, ``local``, ``s3``; with ``s3`` the recordings also go
to the S3 media store, so a call travels S3 -> S3 media -> case): each test drops files through
:class:`Drop` and reads what a user would see: cases, their versions, results and dead letters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import signal
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.postgres import PostgresServer
from servers.s3 import S3Server
from servers.sshd import SftpServer
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import create_async_engine
from support import (
    TopicReader,
    connector,
    free_port,
    publish,
    running,
    s3_config,
    settings_for,
    sftp_config,
    sftp_session,
    start_service,
    upload,
    write_config,
)

from connectors.local import LocalConfig
from connectors.s3 import S3Config
from connectors.sftp import SftpConfig
from streams.cases.store import case_id, cases, file_outcomes
from streams.ingest.parse import ParseSettings
from streams.ingest.recordings import RecordingSettings
from streams.service import Service
from streams.settings import ConnectorSettings
from streams.topics import Topics

CALL = dt.datetime(2026, 11, 20, 14, 2, 53, tzinfo=dt.UTC)
REC = "20261120-140253_joe_baducci"


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))
    return out.getvalue()


WAV = _wav(2.5)  # a real header: the call's duration_ms is 2500
META_XML = b"<call><disposition>sale</disposition><account>ACME</account></call>"
BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode()
        for i in range(1, 10)
    )
    + b"]>\n<call><disposition>&lol9;</disposition></call>\n"
)


class Clock:
    """The bundle engine's injected clock."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Drop:
    """Puts files on the store under test."""

    def __init__(
        self,
        kind: str,
        sftp_server: SftpServer,
        tmp_path: Path,
        s3: tuple[S3Server, str] | None = None,
    ) -> None:
        self.kind = kind
        self.sftp_server = sftp_server
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir()
        self.s3 = s3

    def config(self) -> SftpConfig | LocalConfig | S3Config:
        if self.kind == "sftp":
            return sftp_config(self.sftp_server)
        if self.kind == "s3":
            assert self.s3 is not None
            return s3_config(*self.s3, prefix="calls")
        return LocalConfig(root=self.inbox)

    def media(self) -> dict[str, Any] | None:
        """The media section: S3 when the source is S3 (recordings go bucket to bucket)."""
        if self.kind != "s3":
            return None
        assert self.s3 is not None
        server, bucket = self.s3
        return {
            **s3_config(server, bucket).model_dump(mode="python", exclude={"type", "prefix"}),
            "type": "s3",
            "prefix": "media",
        }

    def put(self, path: str, data: bytes) -> None:
        if self.kind == "sftp":
            with sftp_session(self.sftp_server) as sftp:
                upload(sftp, path, data)
            return
        if self.kind == "s3":
            assert self.s3 is not None
            server, bucket = self.s3
            server.client().put_object(Bucket=bucket, Key=f"calls/{path}", Body=data)
            return
        target = self.inbox / path
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{target.name}.part")
        part.write_bytes(data)
        part.rename(target)


@pytest.fixture(params=["sftp", "local", "s3"])
def drop(
    request: pytest.FixtureRequest,
    sftp_server: SftpServer,
    clean_upload: Path,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
) -> Drop:
    """The store files are dropped on (parametrized)."""
    return Drop(request.param, sftp_server, tmp_path, (s3_server, s3_bucket))


@pytest.fixture(params=["sftp", "s3"])
def remote_drop(
    request: pytest.FixtureRequest,
    sftp_server: SftpServer,
    clean_upload: Path,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
) -> Drop:
    """The two remote stores (tests of restarts, where the store's session matters)."""
    return Drop(request.param, sftp_server, tmp_path, (s3_server, s3_bucket))


@pytest.fixture
def sftp_drop(sftp_server: SftpServer, clean_upload: Path, tmp_path: Path) -> Drop:
    """SFTP only (tests that are about the engine rather than the store)."""
    return Drop("sftp", sftp_server, tmp_path)


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    pg_server.reset()
    return pg_server.async_url()


class Watch:
    """Readers of the topics a user watches."""

    def __init__(self, kafka: str, prefix: str) -> None:
        t = Topics(prefix)
        self.outcomes = TopicReader(kafka, t.file_outcomes, "callstream.FileOutcome")
        self.dead = TopicReader(kafka, t.dead_letter, "callstream.DeadLetter")
        self.results = TopicReader(kafka, t.analysis_results, "callstream.AnalysisResult")
        self.arrivals = TopicReader(kafka, t.file_arrivals, "callstream.FileArrival")

    async def outcome(self, path: str, count: int = 1, timeout: float = 60) -> dict[str, Any]:
        """Wait for the ``count``-th outcome of ``path``; return it."""

        def of(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if r["path"] == path]

        await self.outcomes.wait_for(lambda rs: len(of(rs)) >= count, timeout)
        return of(self.outcomes.records)[count - 1]

    async def results_for(self, key: str, count: int, timeout: float = 60) -> list[Any]:
        """Wait for ``count`` results of the call ``key``; return them."""

        def of(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if r["external_interaction_id"] == key]

        await self.results.wait_for(lambda rs: len(of(rs)) >= count, timeout)
        return of(self.results.records)

    def quiet(self, seconds: float) -> None:
        """Read everything that arrives within ``seconds``."""
        for reader in (self.outcomes, self.dead, self.results, self.arrivals):
            reader.poll(seconds / 4)

    def close(self) -> None:
        for reader in (self.outcomes, self.dead, self.results, self.arrivals):
            reader.close()


@pytest.fixture
def watch(kafka: str, prefix: str) -> Iterator[Watch]:
    w = Watch(kafka, prefix)
    try:
        yield w
    finally:
        w.close()


def _settings(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    store: SftpConfig | LocalConfig | S3Config,
    db: str,
    rec: RecordingSettings,
    media: dict[str, Any] | None = None,
) -> Any:
    base = connector("calls", store)
    conn = ConnectorSettings(
        name=base.name,
        store=base.store,
        poll=base.poll,
        ingest=ParseSettings(source_system="five9"),
        recordings=rec,
    )
    extra: dict[str, Any] = {"media": media} if media is not None else {}
    return settings_for(kafka, prefix, tmp_path / "data", [conn], database_url=db, **extra)


async def _case(service: Service, key: str) -> dict[str, Any] | None:
    cid = case_id("acme", "five9", key)
    async with service.cases.engine.connect() as conn:
        row = (await conn.execute(select(cases).where(cases.c.case_id == cid))).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["conversation"] = json.loads(found["conversation"])
    return found


def _clock(service: Service) -> Clock:
    clock = Clock(CALL + dt.timedelta(hours=1))
    service.bundles.clock = clock
    return clock


async def test_paired_either_order_bad_metadata_and_redelivery(
    kafka: str, prefix: str, tmp_path: Path, drop: Drop, pg_url: str, watch: Watch
) -> None:
    settings = _settings(
        kafka, prefix, tmp_path, drop.config(), pg_url, RecordingSettings(), drop.media()
    )
    async with running(settings) as service:
        _clock(service)
        # recording, then metadata
        drop.put(f"{REC}.wav", WAV)
        assert (await watch.outcome(f"{REC}.wav"))["outcome"] == "processed"
        assert await _case(service, REC) is None  # held until its metadata arrives
        drop.put(f"{REC}.xml", META_XML)
        [result] = await watch.results_for(REC, 1)
        case = await _case(service, REC)
        assert case is not None and case["version"] == 1
        conv = case["conversation"]
        scheme = "s3://" if drop.kind == "s3" else "file://"
        assert conv["recording_ref"].startswith(scheme) and "#sha256=" in conv["recording_ref"]
        assert "/acme/2026/11/20/" in conv["recording_ref"]  # <tenant>/<yyyy>/<mm>/<dd>/<file_id>/
        assert f"/{REC}.wav#sha256=" in conv["recording_ref"]
        assert conv["duration_ms"] == 2500  # read from the WAV header
        assert conv["agent_id"] == "joe_baducci" and conv["channel"] == "voice"
        assert conv["metadata"] == {"disposition": "sale", "account": "ACME"}
        assert result["case_version"] == 1
        # metadata, then recording
        other = "20261120-150000_ann"
        drop.put(f"{other}.json", b'{"disposition": "callback"}')
        assert (await watch.outcome(f"{other}.json"))["outcome"] == "processed"
        drop.put(f"{other}.wav", WAV)
        await watch.results_for(other, 1)
        case2 = await _case(service, other)
        assert case2 is not None and case2["conversation"]["recording_ref"] is not None
        # nested metadata and an entity bomb are rejected; the service carries on
        drop.put("20261120-160000_bob.json", b'{"contact": {"name": "x"}}')
        drop.put("20261120-160500_bob.xml", BOMB)
        nested = await watch.outcome("20261120-160000_bob.json")
        bomb = await watch.outcome("20261120-160500_bob.xml")
        assert (nested["outcome"], nested["reason"]) == ("invalid", "nested_metadata")
        assert (bomb["outcome"], bomb["reason"]) == ("invalid", "unsafe_xml")
        await watch.dead.wait_for(lambda rs: len(rs) >= 2)
        assert sorted(d["reason"] for d in watch.dead.records) == ["nested_metadata", "unsafe_xml"]
        # both halves delivered again as after a crash before their outcomes were recorded
        await watch.arrivals.wait_for(lambda rs: len(rs) >= 4)
        again = [a for a in watch.arrivals.records if a["path"] in (f"{REC}.wav", f"{REC}.xml")]
        async with service.cases.engine.begin() as conn:
            await conn.execute(
                delete(file_outcomes).where(
                    file_outcomes.c.file_id.in_([a["file_id"] for a in again])
                )
            )
        for arrival in again:
            publish(
                kafka,
                Topics(prefix).file_arrivals,
                "callstream.FileArrival",
                f"acme/calls/{arrival['path']}",
                arrival,
            )
        await watch.outcome(f"{REC}.wav", 2)
        await watch.outcome(f"{REC}.xml", 2)
        # a healthy service still pairs a call after all that
        drop.put("20261120-170000_cy.wav", WAV)
        drop.put("20261120-170000_cy.yml", b"disposition: sale\n")
        await watch.results_for("20261120-170000_cy", 1)
        watch.quiet(3)
        again_case = await _case(service, REC)
        assert again_case is not None and again_case["version"] == 1
        assert len(await watch.results_for(REC, 1)) == 1  # no second result version
        assert await service.cases.count_cases("acme") == 3


async def test_metadata_updates_within_48_hours_and_not_after(
    kafka: str, prefix: str, tmp_path: Path, sftp_drop: Drop, pg_url: str, watch: Watch
) -> None:
    drop = sftp_drop
    settings = _settings(kafka, prefix, tmp_path, drop.config(), pg_url, RecordingSettings())
    async with running(settings) as service:
        clock = _clock(service)
        drop.put(f"{REC}.wav", WAV)
        drop.put(f"{REC}.xml", META_XML)
        await watch.results_for(REC, 1)
        clock.now = CALL + dt.timedelta(hours=47)
        drop.put(f"{REC}.xml", b"<call><disposition>refund requested</disposition></call>")
        results = await watch.results_for(REC, 2)
        assert [r["case_version"] for r in results] == [1, 2]  # re-analysed
        case = await _case(service, REC)
        assert case is not None and case["version"] == 2
        assert case["conversation"]["metadata"] == {"disposition": "refund requested"}
        assert case["conversation"]["recording_ref"] is not None
        # the recording was not copied again
        assert (await watch.outcome(f"{REC}.wav"))["outcome"] == "processed"
        clock.now = CALL + dt.timedelta(hours=49)
        drop.put(f"{REC}.xml", b"<call><disposition>churned after all</disposition></call>")
        late = await watch.outcome(f"{REC}.xml", 3)
        assert (late["outcome"], late["reason"]) == ("invalid", "metadata_update_too_late")
        await watch.dead.wait_for(lambda rs: len(rs) >= 1)
        [dead] = watch.dead.records
        assert (dead["reason"], dead["stage"]) == ("metadata_update_too_late", "bundle")
        watch.quiet(3)
        case = await _case(service, REC)
        assert case is not None and case["version"] == 2
        assert case["conversation"]["metadata"] == {"disposition": "refund requested"}
        assert len(await watch.results_for(REC, 2)) == 2


async def test_by_id_metadata_opens_the_case_and_the_recording_joins_it(
    kafka: str, prefix: str, tmp_path: Path, drop: Drop, pg_url: str, watch: Watch
) -> None:
    rec = RecordingSettings(mode="by_id", id_pattern="ringcentral_{id}.{ext}")
    settings = _settings(kafka, prefix, tmp_path, drop.config(), pg_url, rec, drop.media())
    key = "BXyT30eVTWIZjUA"
    async with running(settings) as service:
        _clock(service)
        drop.put(f"{key}.xml", META_XML)
        [first] = await watch.results_for(key, 1)
        case = await _case(service, key)
        assert case is not None and case["conversation"]["recording_ref"] is None
        drop.put(f"ringcentral_{key}.wav", WAV)
        results = await watch.results_for(key, 2)
        assert [r["case_version"] for r in results] == [1, 2]
        case = await _case(service, key)
        assert case is not None and case["conversation"]["recording_ref"] is not None
        assert case["conversation"]["metadata"] == {"disposition": "sale", "account": "ACME"}
        assert await service.cases.count_cases("acme") == 1
        assert first["case_id"] == case["case_id"]


async def test_matched_metadata_pairs_with_one_recording_and_reports_ambiguity(
    kafka: str, prefix: str, tmp_path: Path, sftp_drop: Drop, pg_url: str, watch: Watch
) -> None:
    drop = sftp_drop
    rec = RecordingSettings(mode="matched", name_pattern="{yyyyMMdd}-{hhmmss}_{uid}_{ani}.{ext}")
    settings = _settings(kafka, prefix, tmp_path, drop.config(), pg_url, rec)
    async with running(settings) as service:
        _clock(service)
        joe = "20261120-140253_joe_14155550100"
        drop.put(f"{joe}.wav", WAV)
        await watch.outcome(f"{joe}.wav")
        meta = {"uid": "joe", "call_time": "2026-11-20T14:03:40Z", "ani": "+1 415 555 0100"}
        drop.put("crm/export-1.json", json.dumps(meta).encode())
        await watch.results_for(joe, 1)
        case = await _case(service, joe)
        assert case is not None
        assert case["conversation"]["metadata"]["match.fields"] == "uid,call_time,ani"
        # two recordings of ann a minute apart: her metadata matches both
        drop.put("20261120-150000_ann_14155550111.wav", WAV)
        drop.put("20261120-150100_ann_14155550111.wav", WAV)
        await watch.outcome("20261120-150000_ann_14155550111.wav")
        await watch.outcome("20261120-150100_ann_14155550111.wav")
        drop.put("crm/export-2.json", b'{"uid": "ann", "call_time": "2026-11-20T15:00:30Z"}')
        amb = await watch.outcome("crm/export-2.json")
        assert (amb["outcome"], amb["reason"]) == ("invalid", "ambiguous_match")
        await watch.dead.wait_for(lambda rs: any(d["reason"] == "ambiguous_match" for d in rs))
        watch.quiet(2)
        assert await service.cases.count_cases("acme") == 1


async def test_missing_metadata_is_reported_once_and_the_recording_pairs_later(
    kafka: str, prefix: str, tmp_path: Path, sftp_drop: Drop, pg_url: str, watch: Watch
) -> None:
    drop = sftp_drop
    rec = RecordingSettings(metadata_timeout_seconds=2)
    settings = _settings(kafka, prefix, tmp_path, drop.config(), pg_url, rec)
    async with running(settings) as service:
        drop.put(f"{REC}.wav", WAV)
        await watch.dead.wait_for(lambda rs: len(rs) >= 1, 30)
        await asyncio.sleep(4)  # several more sweeps
        watch.quiet(2)
        assert [(d["reason"], d["stage"], d["path"]) for d in watch.dead.records] == [
            ("metadata_missing", "bundle", f"{REC}.wav")
        ]
        drop.put(f"{REC}.xml", META_XML)
        await watch.results_for(REC, 1)
        case = await _case(service, REC)
        assert case is not None and case["conversation"]["recording_ref"] is not None
        missing = service.metrics.registry.get_sample_value(
            "callstream_recordings_metadata_missing_total", {"tenant": "acme"}
        )
        assert missing == 1


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_kill_9_between_the_two_halves_gives_one_case_with_the_recording(
    kafka: str, prefix: str, tmp_path: Path, remote_drop: Drop, pg_url: str, watch: Watch
) -> None:
    """The recording is processed, the service is SIGKILLed, the metadata is uploaded, and a
    restarted service pairs them: exactly one case, holding the recording's reference."""
    drop = remote_drop
    settings = _settings(
        kafka, prefix, tmp_path, drop.config(), pg_url, RecordingSettings(), drop.media()
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "worker.log"
    env = {"CALLSTREAM_HTTP__PORT": str(free_port())}
    worker = start_service(config, log, env)
    try:
        drop.put(f"{REC}.wav", WAV)
        _wait(
            lambda: (
                any(o["path"] == f"{REC}.wav" for o in watch.outcomes.poll(0.3))
                or any(o["path"] == f"{REC}.wav" for o in watch.outcomes.records)
            ),
            120,
            f"no outcome for the recording; log: {log.read_text()[-3000:]}",
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        drop.put(f"{REC}.xml", META_XML)
        worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(free_port())})

        def paired() -> bool:
            watch.results.poll(0.3)
            assert worker.poll() is None, log.read_text()[-3000:]
            return any(r["external_interaction_id"] == REC for r in watch.results.records)

        _wait(paired, 120, f"the call was never paired; log: {log.read_text()[-3000:]}")
        watch.quiet(4)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)

    async def stored() -> list[dict[str, Any]]:
        engine = create_async_engine(pg_url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(cases))).all()
        finally:
            await engine.dispose()
        return [dict(r._mapping) for r in rows]

    rows = asyncio.run(stored())
    assert len(rows) == 1
    assert rows[0]["external_interaction_id"] == REC and rows[0]["version"] == 1
    conv = json.loads(rows[0]["conversation"])
    assert conv["recording_ref"] is not None and "#sha256=" in conv["recording_ref"]
    assert conv["metadata"] == {"disposition": "sale", "account": "ACME"}
    assert [r["case_version"] for r in watch.results.records] == [1]
