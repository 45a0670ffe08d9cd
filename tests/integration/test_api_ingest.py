"""The standard ingest API, results and cases through the running service (real Kafka)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from support import running, settings_for, unique_prefix

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ApiClient, str, str]]:
    """A running service with processors, and API keys of two tenants."""
    tmp = tmp_path_factory.mktemp("ingest")
    settings = settings_for(kafka, unique_prefix(), tmp, [], api={"operator_token": OPERATOR_TOKEN})
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        operator = client.as_(OPERATOR_TOKEN)
        first = await new_tenant(operator, "umbrella")
        second = await new_tenant(operator, "cyberdyne")
        yield client, first, second


def conv(ext: str, **changes: Any) -> dict[str, Any]:
    """A valid conversation as an integrator pushes it."""
    item: dict[str, Any] = {
        "external_interaction_id": ext,
        "channel": "chat",
        "direction": "inbound",
        "started_at": "2026-11-20T09:00:00Z",
        "ended_at": "2026-11-20T09:05:00Z",
        "agent_id": "a-7",
        "team": "Billing",
        "campaign": "winter",
        "turns": [
            {"speaker": "agent", "at": "2026-11-20T09:00:05Z", "text": "Hello, thanks"},
            {"speaker": "customer", "text": "My bill is wrong"},
        ],
        "metadata": {"crm_ref": "X-1"},
    }
    item.update(changes)
    return item


async def wait_for(client: ApiClient, path: str, ready: Any, timeout: float = 60, **kw: Any) -> Any:
    """GET ``path`` until ``ready(reply)`` holds; return the reply."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(path, **kw)
        if ready(reply):
            return reply
        assert time.monotonic() < deadline, f"{path}: {reply.status} {reply.text[:2000]}"
        await asyncio.sleep(0.3)


async def test_a_mixed_batch_is_answered_per_item_and_the_valid_ones_become_cases(api) -> None:
    client, key, other_key = api
    me = client.as_(key)
    body = {
        "items": [
            conv("MIX-1"),
            conv("MIX-2", channel="voice", turns=[]),
            {"channel": "chat", "started_at": "2026-11-20T09:00:00Z"},  # no id
            conv("MIX-4", started_at="yesterday-ish"),
            conv("MIX-5", tenant="cyberdyne"),  # another tenant's name: refused
            conv("MIX-6", ended_at="2026-11-20T08:00:00Z"),
            conv("MIX-7", agent_name="bad\x00name"),
        ]
    }
    reply = await me.post("/v1/conversations", body)
    assert reply.status == 202, reply.text
    answer = reply.body
    assert answer["request_id"].startswith("req_")
    assert (answer["accepted"], answer["rejected"]) == (2, 5)
    by_index = {i["index"]: i for i in answer["items"]}
    assert by_index[0]["status"] == by_index[1]["status"] == "accepted"
    expected = {
        2: ("missing_id", "items.2.external_interaction_id"),
        3: ("bad_timestamp", "items.3.started_at"),
        4: ("tenant_mismatch", "items.4.tenant"),
        5: ("end_before_start", "items.5.ended_at"),
        6: ("control_character", "items.6"),
    }
    for index, (reason, field) in expected.items():
        item = by_index[index]
        assert item["status"] == "rejected", item
        assert (item["errors"][0]["reason"], item["errors"][0]["field"]) == (reason, field)
        assert item["dead_letter_id"].startswith("dl_")

    case_ids = [by_index[0]["case_id"], by_index[1]["case_id"]]
    results = await wait_for(
        me,
        "/v1/results",
        lambda r: {i["case_id"] for i in r.body["items"]} >= set(case_ids),
        params={"team": "Billing", "campaign": "winter", "agent": "a-7"},
    )
    for item in results.body["items"]:
        assert item["team"] == "Billing" and item["agent_id"] == "a-7"
        assert item["parameters"] and 0 <= item["overall_score"] <= 100
    none = await me.get("/v1/results", params={"team": "Nobody"})
    assert none.status == 200 and none.body["items"] == []

    case = await me.get(f"/v1/cases/{case_ids[0]}")
    assert case.status == 200, case.text
    assert case.body["external_interaction_id"] == "MIX-1"
    assert case.body["conversation"]["metadata"] == {"crm_ref": "X-1"}
    assert case.body["conversation"]["turns"][1]["speaker"] == "customer"
    [version] = case.body["versions"]
    assert version["source"]["kind"] == "api"
    assert version["source"]["file_id"] == answer["request_id"]
    assert version["source"]["row"] == 1
    assert [r["case_version"] for r in case.body["results"]] == [1]

    lineage = await me.get(f"/v1/cases/{case_ids[1]}/lineage")
    assert lineage.status == 200, lineage.text
    [step] = lineage.body["steps"]
    assert step["request"]["request_id"] == answer["request_id"]
    assert step["request"]["items"] == 7 and step["request"]["accepted"] == 2
    assert step["source"]["row"] == 2 and step["file"] is None
    assert [r["case_id"] for r in step["results"]] == [case_ids[1]]

    dead = await me.get("/v1/dead-letters", params={"file_id": answer["request_id"]})
    assert dead.status == 200
    listed = {d["id"]: d for d in dead.body["items"]}
    assert set(listed) == {by_index[i]["dead_letter_id"] for i in expected}
    assert all(d["stage"] == "api" and d["status"] == "open" for d in listed.values())
    assert listed[by_index[3]["dead_letter_id"]]["reason"] == "bad_timestamp"

    # The other tenant sees none of it.
    them = client.as_(other_key)
    for path in (f"/v1/cases/{case_ids[0]}", f"/v1/cases/{case_ids[0]}/lineage"):
        reply = await them.get(path)
        assert reply.status == 404 and "MIX-1" not in reply.text
    assert (await them.get("/v1/results")).body["items"] == []
    assert (await them.get("/v1/dead-letters")).body["items"] == []
    theirs = await them.post("/v1/dead-letters/replay", {"ids": [by_index[3]["dead_letter_id"]]})
    assert theirs.status == 404


async def test_a_body_off_the_schema_is_refused_whole_with_every_field(api) -> None:
    client, key, _other = api
    me = client.as_(key)
    body = {"items": [conv("SHAPE-1"), conv("SHAPE-2", colour="blue", agent_id=42)]}
    reply = await me.post("/v1/conversations", body)
    assert reply.status == 422 and reply.content_type == "application/problem+json"
    fields = {e["field"] for e in reply.body["errors"]}
    assert fields == {"items.1.colour", "items.1.agent_id"}
    source = conv("SHAPE-3", source={"file_id": "x"})  # the service sets the source
    assert (await me.post("/v1/conversations", source)).status == 422
    nothing = await me.get("/v1/results", params={"case_id": "0" * 32})
    assert nothing.body["items"] == []


async def test_a_retry_with_the_same_idempotency_key_has_no_second_effect(api) -> None:
    client, key, _other = api
    me = client.as_(key)
    body = {"items": [conv("IDEM-1"), conv("IDEM-2", started_at="")]}
    headers = {"Idempotency-Key": "order-77"}
    first = await me.post("/v1/conversations", body, headers=headers)
    assert first.status == 202, first.text
    again = await me.post("/v1/conversations", {"items": list(body["items"])}, headers=headers)
    assert again.status == 202 and again.body == first.body
    case_id = first.body["items"][0]["case_id"]
    await wait_for(me, f"/v1/cases/{case_id}", lambda r: r.status == 200 and r.body["results"])
    third = await me.post("/v1/conversations", body, headers=headers)
    assert third.body == first.body
    await asyncio.sleep(2)  # give a (wrong) second delivery time to land
    case = await me.get(f"/v1/cases/{case_id}")
    assert case.body["version"] == 1 and len(case.body["versions"]) == 1
    assert len(case.body["results"]) == 1
    dead = await me.get("/v1/dead-letters", params={"file_id": first.body["request_id"]})
    assert len(dead.body["items"]) == 1

    changed = await me.post("/v1/conversations", {"items": [conv("IDEM-3")]}, headers=headers)
    assert changed.status == 409 and "different body" in changed.body["detail"]
    # Keys are per tenant: the other tenant may use the same one.
    other = await client.as_(_other).post("/v1/conversations", conv("IDEM-9"), headers=headers)
    assert other.status == 202 and other.body["request_id"] != first.body["request_id"]


async def test_a_batch_over_1000_items_is_refused_whole(api) -> None:
    client, key, _other = api
    me = client.as_(key)
    too_many = {"items": [conv(f"BIG-{i}") for i in range(1001)]}
    reply = await me.post("/v1/conversations", too_many)
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "items"
    assert "1,000" in reply.body["errors"][0]["message"]
    for bad in ([conv("X")], {"items": []}, {"items": "x"}, "text"):
        refused = await me.post("/v1/conversations", bad)
        assert refused.status == 422, (bad, refused.text)
    dead = await me.get("/v1/dead-letters", params={"reason": "missing_id"})
    assert all("BIG-" not in d["excerpt"] for d in dead.body["items"])


async def test_a_single_conversation_is_one_item(api) -> None:
    client, key, _other = api
    reply = await client.as_(key).post("/v1/conversations", conv("ONE-1", channel="EMAIL"))
    assert reply.status == 202
    [item] = reply.body["items"]
    assert item["status"] == "accepted" and item["index"] == 0
    bad = await client.as_(key).post("/v1/conversations", conv("ONE-2", channel="fax"))
    [item] = bad.body["items"]
    assert item["errors"][0] == {
        "reason": "invalid_value",
        "field": "channel",
        "message": "unknown channel 'fax'",
    }


async def test_results_pages_never_skip_nor_repeat(api) -> None:
    client, key, _other = api
    me = client.as_(key)
    body = {"items": [conv(f"PAGE-{i}", campaign="paging") for i in range(7)]}
    assert (await me.post("/v1/conversations", body)).status == 202
    await wait_for(
        me, "/v1/results", lambda r: len(r.body["items"]) == 7, params={"campaign": "paging"}
    )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"campaign": "paging", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await me.get("/v1/results", params=params)
        assert page.status == 200
        seen += [i["idempotency_key"] for i in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    bad = await me.get("/v1/results", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status == 400
