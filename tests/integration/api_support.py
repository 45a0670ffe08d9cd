"""Calling the running service's /v1 API in integration tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from servers.s3 import S3Server
from servers.sshd import SftpServer

OPERATOR_TOKEN = "operator-token-for-tests-0123456789abcdef"
"""The operator token the API tests configure (api.operator_token)."""


@dataclass
class Reply:
    """One HTTP answer: status, content type and decoded JSON body (None when not JSON)."""

    status: int
    content_type: str
    body: Any
    text: str
    headers: dict[str, str]


class ApiClient:
    """A small client of the /v1 API at ``base``, with an optional bearer token."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def as_(self, token: str | None) -> ApiClient:
        """The same client sending another token (shares the session)."""
        other = ApiClient(self.base, token)
        other._session = self._session
        return other

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request and read the whole answer."""
        assert self._session is not None
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        async with self._session.request(
            method, self.base + path, json=json, data=data, headers=sent, params=params
        ) as resp:
            text = await resp.text()
            body = None
            if resp.content_type in ("application/json", "application/problem+json"):
                body = await resp.json(content_type=None)
            return Reply(resp.status, resp.content_type, body, text, dict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)


async def new_tenant(operator: ApiClient, tenant: str, key_name: str = "tests") -> str:
    """Create ``tenant`` through the operator API and return a fresh API key of it."""
    created = await operator.post("/v1/tenants", {"id": tenant, "name": tenant.title()})
    assert created.status == 201, created.text
    key = await operator.post(f"/v1/tenants/{tenant}/keys", {"name": key_name})
    assert key.status == 201, key.text
    return str(key.body["key"])


def sftp_target(server: SftpServer, root: str = "/upload", **extra: Any) -> dict[str, Any]:
    account = server.users["cs_pw"]
    return {
        "type": "sftp",
        "host": server.host,
        "port": server.port,
        "username": account.name,
        "password": account.password,
        "host_key": server.host_key_line,
        "root": root,
        "connect_timeout_seconds": 5,
        "operation_timeout_seconds": 5,
    } | extra


def s3_target(server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": "reports/daily",
        "endpoint_url": server.endpoint_url,
        "addressing_style": "path",
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "max_attempts": 1,
    } | extra


async def until(client: ApiClient, path: str, ready: Any, timeout: float = 60, **kw: Any) -> Any:
    """GET ``path`` until ``ready(body)`` holds (IndexError, KeyError: not yet); return the body."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(path, **kw)
        try:
            done = reply.status == 200 and ready(reply.body)
        except (IndexError, KeyError):
            done = False
        if done:
            return reply.body
        assert time.monotonic() < deadline, f"{path}: {reply.status} {reply.text[:2000]}"
        await asyncio.sleep(0.3)


async def tenant_key(client: ApiClient, tenant: str) -> str:
    """A new API key of ``tenant`` (made with the operator token)."""
    made = await client.as_(OPERATOR_TOKEN).post(f"/v1/tenants/{tenant}/keys", {"name": "t"})
    assert made.status == 201, made.text
    return str(made.body["key"])


async def create_local_connector(me: ApiClient, inbox: Path, name: str = "api-drop") -> str:
    """Create an API connector polling the local folder ``inbox`` every 0.3 s (made if
    missing; API connectors' folders lie under ``data_dir/local/<tenant>``); return its id."""
    created = await me.post(
        "/v1/connectors",
        {
            "name": name,
            "store": {"type": "local", "root": str(inbox), "create": True},
            "poll": {"interval_seconds": 0.3, "min_age_seconds": 0},
        },
    )
    assert created.status == 201, created.text
    return str(created.body["id"])
