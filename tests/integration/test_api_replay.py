"""Files, lineage and dead-letter replay through the running service (real Kafka; SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from api_support import OPERATOR_TOKEN, ApiClient, create_local_connector, tenant_key, until
from support import connector, running, settings_for, unique_prefix

from connectors.local import LocalConfig
from streams.ingest.parse import ParseSettings
from streams.settings import Settings

EXPORT = (
    "call_id,started_at,ended_at,legacy_start,agent_id,team\n"
    "R-1,2026-11-20T09:00:00Z,,2026-11-20T09:00:00Z,a-1,Sales\n"
    "R-2,see legacy_start,,2026-11-20T10:00:00Z,a-2,Sales\n"
)


def settings(kafka: str, prefix: str, tmp: Path, db: str, mapping: dict[str, str]) -> Settings:
    """The service with one local connector of tenant acme, parsing with ``mapping``."""
    local = connector("drop", LocalConfig(root=tmp / "inbox", create=True), cleanup="keep")
    local = local.model_copy(update={"ingest": ParseSettings(mapping=mapping)})
    return settings_for(
        kafka,
        prefix,
        tmp / "data",
        [local],
        database_url=db,
        api={"operator_token": OPERATOR_TOKEN},
    )


async def test_a_dead_row_fixed_by_a_new_mapping_replays_once(
    kafka: str, tmp_path: Path, database_url: str
) -> None:
    prefix = unique_prefix()
    before = settings(kafka, prefix, tmp_path, database_url, {})
    async with running(before) as service, ApiClient(service.http_url or "") as client:
        made = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "t"})
        assert made.status == 201, made.text
        me = client.as_(made.body["key"])
        (tmp_path / "inbox" / "export.csv").write_text(EXPORT)

        judged = ("processed", "partial", "invalid")
        files = await until(me, "/v1/files", lambda b: b["items"][0]["outcome"] in judged)
        [file] = files["items"]
        assert (file["path"], file["outcome"], file["connector"]) == (
            "export.csv",
            "partial",
            "drop",
        )
        assert (file["rows_accepted"], file["rows_rejected"]) == (1, 1)
        assert file["rejected_by_reason"] == {"bad_timestamp": 1}
        assert (await me.get("/v1/files", params={"outcome": "processed"})).body["items"] == []

        dead = await until(
            me, "/v1/dead-letters", lambda b: b["items"], params={"file_id": file["file_id"]}
        )
        [letter] = dead["items"]
        assert (letter["reason"], letter["row"], letter["column"]) == (
            "bad_timestamp",
            2,
            "started_at",
        )
        assert "see legacy_start" in letter["excerpt"]

        results = await until(me, "/v1/results", lambda b: b["items"])
        case_id = results["items"][0]["case_id"]
        lineage = (await me.get(f"/v1/cases/{case_id}/lineage")).body
        [step] = lineage["steps"]
        assert step["source"] == {**step["source"], "kind": "file", "row": 1, "path": "export.csv"}
        assert step["file"]["file_id"] == file["file_id"]
        assert step["file"]["outcome"] == "partial" and step["request"] is None
        assert step["results"][0]["agent_id"] == "a-1"

        # Replayed under the same mapping, it fails again and stays open.
        again = await me.post("/v1/dead-letters/replay", {"ids": [letter["id"]]})
        assert again.status == 200, again.text
        assert again.body["items"][0]["outcome"] == "failed"
        assert again.body["items"][0]["reason"] == "bad_timestamp"
        key = made.body["key"]

    fixed = settings(kafka, prefix, tmp_path, database_url, {"started_at": "legacy_start"})
    async with running(fixed) as service, ApiClient(service.http_url or "", key) as me:
        replayed = await me.post("/v1/dead-letters/replay", {"file_id": file["file_id"]})
        assert replayed.status == 200, replayed.text
        assert (replayed.body["replayed"], replayed.body["failed"]) == (1, 0)
        [item] = replayed.body["items"]
        assert item["delivery"] == f"file:{file['file_id']}:2"
        case = await until(me, f"/v1/cases/{item['case_id']}", lambda b: b["results"])
        assert case["external_interaction_id"] == "R-2"
        assert case["conversation"]["started_at"].startswith("2026-11-20T10:00:00")
        assert case["versions"][0]["source"]["row"] == 2

        letter = (await me.get("/v1/dead-letters", params={"status": "replayed"})).body["items"][0]
        assert letter["replayed_by"].startswith("key:") and letter["replay_attempts"] == 2
        assert letter["replay_case_id"] == item["case_id"]

        twice = await me.post("/v1/dead-letters/replay", {"ids": [letter["id"]]})
        assert twice.body["items"][0]["outcome"] == "already_replayed"
        by_filter = await me.post("/v1/dead-letters/replay", {"file_id": file["file_id"]})
        assert by_filter.body["items"] == []  # only open ones are selected by filter
        await asyncio.sleep(2)
        case = (await me.get(f"/v1/cases/{item['case_id']}")).body
        assert case["version"] == 1 and len(case["results"]) == 1
        lineage = (await me.get(f"/v1/cases/{item['case_id']}/lineage")).body
        assert lineage["steps"][0]["file"]["path"] == "export.csv"

        # The ingest API on the same database: idempotent push, lineage, dead letter.
        body = {
            "items": [
                {"external_interaction_id": "API-1", "started_at": "2026-11-20T11:00:00Z"},
                {"external_interaction_id": "API-2"},
            ]
        }
        headers = {"Idempotency-Key": "push-1"}
        pushed = await me.post("/v1/conversations", body, headers=headers)
        assert pushed.status == 202, pushed.text
        assert (await me.post("/v1/conversations", body, headers=headers)).body == pushed.body
        accepted, rejected = pushed.body["items"]
        assert rejected["errors"][0]["reason"] == "bad_timestamp"
        lineage = await until(
            me, f"/v1/cases/{accepted['case_id']}/lineage", lambda b: b["steps"][0]["results"]
        )
        assert lineage["steps"][0]["request"]["request_id"] == pushed.body["request_id"]
        today = dt.datetime.now(dt.UTC).date().isoformat()
        listed = await me.get("/v1/dead-letters", params={"date": today, "reason": "bad_timestamp"})
        assert rejected["dead_letter_id"] in {d["id"] for d in listed.body["items"]}
        retried = await me.post("/v1/dead-letters/replay", {"ids": [rejected["dead_letter_id"]]})
        assert retried.body["items"][0]["outcome"] == "failed"


async def test_a_dead_row_of_an_api_connector_replays_on_a_worker_that_does_not_run_it(
    kafka: str, tmp_path: Path, database_url: str
) -> None:
    """With several workers the one answering the replay may not run the connector (or run no
    connectors at all, ``roles: [api, processors]``): the connector's stored settings parse."""
    prefix = unique_prefix()
    base = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [],
        database_url=database_url,
        api={"operator_token": OPERATOR_TOKEN},
    )
    inbox = base.data_dir / "local" / "acme" / "inbox"
    async with running(base) as service, ApiClient(service.http_url or "") as client:
        key = await tenant_key(client, "acme")
        me = client.as_(key)
        ident = await create_local_connector(me, inbox)
        await until(me, "/v1/files", lambda _b: inbox.is_dir())
        (inbox / "export.csv").write_text(EXPORT)
        dead = await until(me, "/v1/dead-letters", lambda b: b["items"])
        [letter] = dead["items"]
        assert (letter["connector"], letter["reason"]) == ("api-drop", "bad_timestamp")
        mapped = await me.patch(
            f"/v1/connectors/{ident}",
            {"ingest": {"mapping": {"started_at": "legacy_start"}}},
        )
        assert mapped.status == 200, mapped.text

    no_connectors = base.model_copy(update={"roles": ["api", "processors"]})
    async with running(no_connectors) as service, ApiClient(service.http_url or "", key) as me:
        replayed = await me.post("/v1/dead-letters/replay", {"ids": [letter["id"]]})
        assert replayed.status == 200, replayed.text
        assert (replayed.body["replayed"], replayed.body["failed"]) == (1, 0), replayed.body
        case = await until(me, f"/v1/cases/{replayed.body['items'][0]['case_id']}", lambda b: b)
        assert case["external_interaction_id"] == "R-2"
