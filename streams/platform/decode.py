"""Decode a platform event's value into a JSON-like object (the mapping's input).

Contract: :meth:`ValueDecoder.decode` turns the raw value of one event into a ``dict`` of plain
JSON types (Avro logical types become ISO 8601 text, decimals and UUIDs text, bytes base64), or
raises :class:`EventInvalid` with a reason code (``invalid_json``, ``not_an_object``,
``too_large``, ``schema_mismatch``, ``invalid_wire_format``, ``unknown_schema``) - the event is
then dead-lettered. It never raises anything else for any input and never does I/O: with the
Confluent wire format, :meth:`ValueDecoder.prepare` first fetches the writer schemas a batch
names from the registry (``GET <url>/schemas/ids/<id>``, cached for the process's life: an id
never changes meaning). A registry that cannot be reached raises
:class:`RegistryUnavailable` (transient: the batch is retried, nothing is committed).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import io
import json
import struct
import uuid
from collections.abc import Iterable
from typing import Any

import aiohttp
import fastavro

from streams.errors import CallstreamError
from streams.platform.settings import PlatformConnectorSettings

MAGIC = 0
_HEADER = struct.Struct(">bI")


class EventInvalid(Exception):
    """The event cannot be read; ``reason`` is the dead letter's reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RegistryUnavailable(CallstreamError, ConnectionError):
    """The schema registry did not answer (network, 5xx): transient, the batch is retried."""

    retriable = True


def plain(value: Any) -> Any:
    """Return ``value`` with every Avro-decoded type turned into a JSON type."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def schema_id(value: bytes) -> int:
    """Return the schema id of a Confluent wire-format value, or raise EventInvalid."""
    if len(value) < _HEADER.size:
        raise EventInvalid("invalid_wire_format", f"{len(value)} bytes: too short for the header")
    magic, sid = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise EventInvalid("invalid_wire_format", f"magic byte {magic}, expected {MAGIC}")
    return int(sid)


def read_avro(schema: Any, data: bytes) -> dict[str, Any]:
    """Read one schemaless Avro record that must use every byte of ``data``."""
    buf = io.BytesIO(data)
    try:
        record = fastavro.schemaless_reader(buf, schema, None)
    except (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        raise EventInvalid("schema_mismatch", f"not a record of the writer schema: {exc}") from None
    except MemoryError:
        raise EventInvalid("schema_mismatch", "a length in the value is absurdly large") from None
    left = len(data) - buf.tell()
    if left:
        raise EventInvalid("schema_mismatch", f"{left} bytes left after the record")
    if not isinstance(record, dict):
        raise EventInvalid("not_an_object", "the value is not an Avro record")
    return plain(record)  # type: ignore[no-any-return]


class SchemaRegistry:
    """Fetches writer schemas by id from a Confluent schema registry, cached."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.schemas: dict[int, Any] = {}
        self.unknown: dict[int, str] = {}  # id -> why the registry does not give a schema

    async def fetch(self, ids: Iterable[int]) -> None:
        """Fetch every id not fetched before; raise RegistryUnavailable on an outage."""
        missing = sorted({i for i in ids if i not in self.schemas and i not in self.unknown})
        if not missing:
            return
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for sid in missing:
                await self._fetch_one(session, sid)

    async def _fetch_one(self, session: aiohttp.ClientSession, sid: int) -> None:
        where = f"{self.url}/schemas/ids/{sid}"
        try:
            async with session.get(where, allow_redirects=False) as resp:
                if resp.status == 404:
                    self.unknown[sid] = "the registry has no schema with this id"
                    return
                if resp.status != 200:
                    raise RegistryUnavailable(f"schema registry {where}: HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RegistryUnavailable(f"schema registry {where}: {exc!r}") from exc
        kind = body.get("schemaType", "AVRO") if isinstance(body, dict) else None
        if kind != "AVRO" or not isinstance(body.get("schema"), str):
            self.unknown[sid] = f"not an Avro schema (schemaType {kind!r})"
            return
        try:
            self.schemas[sid] = fastavro.parse_schema(json.loads(body["schema"]))
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            self.unknown[sid] = f"the registry's schema does not parse: {exc}"


class ValueDecoder:
    """Decodes values of one connector's events (see the module doc)."""

    def __init__(
        self, settings: PlatformConnectorSettings, registry: SchemaRegistry | None = None
    ) -> None:
        self.format = settings.value_format
        self.max_bytes = settings.ingest.max_document_bytes
        self.writer = settings.writer_schema()
        if registry is None and settings.schema_registry_url:
            registry = SchemaRegistry(settings.schema_registry_url)
        self.registry = registry

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Fetch the writer schemas these values name (Confluent wire format only)."""
        if self.registry is None:
            return
        ids = set()
        for value in values:
            with contextlib.suppress(EventInvalid):  # decode() dead-letters it
                ids.add(schema_id(value or b""))
        await self.registry.fetch(ids)

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """Decode one value (after :meth:`prepare`); raise EventInvalid for a bad one."""
        if not value:
            raise EventInvalid("empty_value", "the event has no value (a tombstone?)")
        if len(value) > self.max_bytes:
            raise EventInvalid(
                "too_large",
                f"the value has {len(value)} bytes; ingest.max_document_bytes is {self.max_bytes}",
            )
        if self.format == "json":
            try:
                doc = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise EventInvalid("invalid_json", f"not JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise EventInvalid("not_an_object", f"a JSON {type(doc).__name__}, not an object")
            return doc
        if self.registry is not None:
            sid = schema_id(value)
            if sid in self.registry.unknown:
                raise EventInvalid(
                    "unknown_schema", f"schema id {sid}: {self.registry.unknown[sid]}"
                )
            if sid not in self.registry.schemas:
                raise EventInvalid("unknown_schema", f"schema id {sid} was not fetched")
            return read_avro(self.registry.schemas[sid], value[_HEADER.size :])
        return read_avro(self.writer, value)
