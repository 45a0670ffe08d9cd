"""Conversations from SFTP to cases in PostgreSQL and results on the feedback topic, end to end.

The whole service runs in-process against the real broker, OpenSSH sftp server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    CSV_HEADER,
    TopicReader,
    connector,
    conversation_row,
    conversations_csv,
    running,
    settings_for,
    sftp_config,
    sftp_session,
    upload,
)

from streams.topics import Topics

pytestmark = pytest.mark.usefixtures("clean_upload")

RESULT = "callstream.AnalysisResult"
DEAD = "callstream.DeadLetter"
CASE = "callstream.CaseEvent"


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    pg_server.reset()
    return pg_server.async_url()


def _settings(
    kafka: str, prefix: str, tmp_path: Path, sftp_server: SftpServer, pg_url: str, **poll
):  # type: ignore[no-untyped-def]
    conn = connector("crm", sftp_config(sftp_server), **poll)
    return settings_for(kafka, prefix, tmp_path, [conn], database_url=pg_url)


async def test_a_csv_of_1000_conversations_gives_1000_cases_and_results(
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    tmp_path: Path,
    pg_url: str,
    clean_upload: Path,
) -> None:
    t = Topics(prefix)
    results = TopicReader(kafka, t.analysis_results, RESULT)
    settings = _settings(kafka, prefix, tmp_path, sftp_server, pg_url, cleanup="move")
    try:
        async with running(settings) as service:
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "exports/20261120_conversations.csv", conversations_csv(1000))
            await results.wait_for(lambda rs: len({r["case_id"] for r in rs}) >= 1000, 60)
            assert await service.cases.count_cases("acme") == 1000
            assert await service.cases.count_current_results("acme") == 1000
            # every row committed: the file has been moved out of the inbox
            moved = clean_upload / "processed/exports/20261120_conversations.csv"
            for _ in range(100):
                if moved.exists():
                    break
                await asyncio.sleep(0.2)
            assert (
                moved.exists()
                and not (clean_upload / "exports/20261120_conversations.csv").exists()
            )
            await asyncio.sleep(9)  # one consumer-lag sample
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{service.http_url}/metrics") as resp,
            ):
                metrics = await resp.text()
    finally:
        results.close()
    assert 'callstream_records_accepted_total{connector="crm",tenant="acme"} 1000.0' in metrics
    assert 'callstream_cases_opened_total{tenant="acme"} 1000.0' in metrics
    assert "callstream_results_published_total 1000.0" in metrics
    assert "callstream_end_to_end_latency_seconds_count 1000.0" in metrics
    assert re.search(
        r'callstream_consumer_lag_messages\{group="[^"]+",topic="[^"]+conversations.v1"\} 0.0',
        metrics,
    )
    keys = {r["idempotency_key"] for r in results.records}
    assert len(keys) == 1000
    sample = results.records[0]
    assert sample["tenant"] == "acme" and sample["profile_id"] == "default"
    assert sample["external_interaction_id"].startswith("CALL-")


async def test_bad_rows_are_dead_lettered_with_reason_and_row_the_rest_flows(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path, pg_url: str
) -> None:
    rows = [conversation_row(i) for i in range(1000)]
    bad = {
        10: (",voice,inbound,2026-11-20T09:00:00Z,,a,b,c,d,e,f,g,h\n", "missing_id"),
        20: ("CALL-B20,voice,inbound,yesterday,,a,b,c,d,e,f,g,h\n", "bad_timestamp"),
        30: (
            "CALL-B30,voice,inbound,2026-11-20T09:00:00Z,2026-11-20T08:00:00Z,a,b,c,d,e,f,g,h\n",
            "end_before_start",
        ),
        40: ("CALL-B40,voice,inbound,2026-11-20T09:00:00Z\n", "wrong_column_count"),
        50: (
            "CALL-B50,voice,inbound,2026-11-20T09:00:00Z,,\udcff\udcfe,b,c,d,e,f,g,h\n",
            "invalid_utf8",
        ),
        60: ("CALL-B60,fax,inbound,2026-11-20T09:00:00Z,,a,b,c,d,e,f,g,h\n", "invalid_value"),
        70: ("CALL-B70,voice,sideways,2026-11-20T09:00:00Z,,a,b,c,d,e,f,g,h\n", "invalid_value"),
        80: ("CALL-B80,voice,inbound,2026-11-20T25:00:00Z,,a,b,c,d,e,f,g,h\n", "bad_timestamp"),
        90: ("CALL-B90,voice,inbound,,,a,b,c,d,e,f,g,h\n", "bad_timestamp"),
        100: (
            "CALL-B100,voice,inbound,2026-11-20T09:00:00Z,,a,b,c,d,e,f,g,h,extra\n",
            "wrong_column_count",
        ),
    }
    for index, (line, _reason) in bad.items():
        rows[index] = line
    data = (CSV_HEADER + "".join(rows)).encode("utf-8", "surrogateescape")
    t = Topics(prefix)
    dead = TopicReader(kafka, t.dead_letter, DEAD)
    outcomes = TopicReader(kafka, t.file_outcomes, "callstream.FileOutcome")
    try:
        async with running(_settings(kafka, prefix, tmp_path, sftp_server, pg_url)) as service:
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "exports/with-bad-rows.csv", data)
            await outcomes.wait_for(lambda rs: len(rs) >= 1, 60)
            await dead.wait_for(lambda rs: len(rs) >= 10, 30)
            await asyncio.sleep(2)  # cases of the last batch
            assert await service.cases.count_cases("acme") == 990
    finally:
        dead.close()
        outcomes.close()
    got = {d["row"]: d["reason"] for d in dead.records}
    assert got == {index + 1: reason for index, (_line, reason) in bad.items()}
    by_row = {d["row"]: d for d in dead.records}
    assert by_row[51]["column"] == "agent_id"  # the invalid UTF-8 field
    assert by_row[11]["column"] == "external_interaction_id"
    assert all(d["path"] == "exports/with-bad-rows.csv" and d["excerpt"] for d in dead.records)
    assert all(
        d["raw"] == bad[d["row"] - 1][0].encode("utf-8", "surrogateescape") for d in dead.records
    )
    outcome = outcomes.records[0]
    assert (outcome["outcome"], outcome["rows_accepted"], outcome["rows_rejected"]) == (
        "partial",  # never "processed" while rows are missing
        990,
        10,
    )
    assert outcome["rejected_by_reason"] == dict(Counter(reason for _line, reason in bad.values()))
    assert outcome["lines_read"] == 1001


async def test_reupload_opens_no_case_and_changed_rows_update_cases_and_results(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path, pg_url: str
) -> None:
    t = Topics(prefix)
    results = TopicReader(kafka, t.analysis_results, RESULT)
    cases = TopicReader(kafka, t.cases, CASE)
    outcomes = TopicReader(kafka, t.file_outcomes, "callstream.FileOutcome")
    original = conversations_csv(200)
    try:
        async with running(_settings(kafka, prefix, tmp_path, sftp_server, pg_url)) as service:
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "exports/daily.csv", original, mtime=time.time() - 60)
            await results.wait_for(lambda rs: len(rs) >= 200, 60)
            with sftp_session(sftp_server) as sftp:  # same content, new upload time
                upload(sftp, "exports/daily.csv", original, mtime=time.time() - 30)
            await outcomes.wait_for(lambda rs: len(rs) >= 2, 60)
            await cases.wait_for(lambda rs: len(rs) >= 200, 60)  # a new reader needs a moment
            await asyncio.sleep(2)  # a duplicate would land now
            await asyncio.to_thread(cases.poll, 0.5)
            assert len(cases.records) == 200
            assert await service.cases.count_cases("acme") == 200

            changed = [conversation_row(i) for i in range(200)]
            for i in (3, 50, 99, 150, 199):
                changed[i] = conversation_row(i, disposition="escalated")
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "exports/daily.csv", (CSV_HEADER + "".join(changed)).encode())
            await results.wait_for(lambda rs: len(rs) >= 205, 60)
            await asyncio.sleep(2)
            await asyncio.to_thread(results.poll, 0.5)
            await asyncio.to_thread(cases.poll, 0.5)
            assert await service.cases.count_cases("acme") == 200
    finally:
        results.close()
        cases.close()
        outcomes.close()
    updates = [c for c in cases.records if c["kind"] == "updated"]
    assert sorted(c["external_interaction_id"] for c in updates) == [
        f"CALL-{i:06d}" for i in (3, 50, 99, 150, 199)
    ]
    assert all(c["version"] == 2 for c in updates)
    second = [r for r in results.records if r["result_version"] == 2]
    assert len(second) == 5 and len(results.records) == 205


async def test_chat_transcript_is_analysed_with_text_rules_and_sentiment(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path, pg_url: str
) -> None:
    chat = (Path(__file__).parents[2] / "streams/demo/files/chats/CHAT-2001.json").read_bytes()
    angry = (
        b'{"external_interaction_id": "CHAT-3", "turns": ['
        b'{"speaker": "customer", "time": "2026-11-20T12:00:00Z", "text": "This is terrible, '
        b'I am furious and the service is awful."},'
        b'{"speaker": "agent", "time": "2026-11-20T12:05:00Z", '
        b'"text": "Calm down, it is not my problem."}]}'
    )
    t = Topics(prefix)
    results = TopicReader(kafka, t.analysis_results, RESULT)
    try:
        async with running(_settings(kafka, prefix, tmp_path, sftp_server, pg_url)):
            with sftp_session(sftp_server) as sftp:
                upload(sftp, "chats/CHAT-2001.json", chat)
                upload(sftp, "chats/CHAT-3.json", angry)
            await results.wait_for(lambda rs: len(rs) >= 2, 60)
    finally:
        results.close()
    by_id = {r["external_interaction_id"]: r for r in results.records}
    good = {p["id"]: p for p in by_id["CHAT-2001"]["parameters"]}
    assert good["greeting"]["passed"] and good["greeting"]["evidence"][0]["turn_index"] == 1
    assert "hello" in good["greeting"]["evidence"][0]["detail"].lower()
    assert good["sentiment"]["passed"] and good["sentiment"]["applicable"]
    bad = {p["id"]: p for p in by_id["CHAT-3"]["parameters"]}
    assert not bad["courtesy"]["passed"]
    assert {e["turn_index"] for e in bad["courtesy"]["evidence"]} == {1}
    assert not bad["sentiment"]["passed"]
    assert bad["sentiment"]["evidence"][1]["turn_index"] == 0
    assert not bad["first-response"]["passed"]  # 300 s > 60 s
    assert not by_id["CHAT-3"]["passed"] and by_id["CHAT-2001"]["passed"]
