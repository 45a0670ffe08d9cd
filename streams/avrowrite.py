"""A fast, strict Avro binary writer compiled from parsed schemas (schemaless encoding).

Contract: :func:`compile_writer` turns a fastavro-parsed schema into a function
``write(out: bytearray, value) -> None`` that appends the value's Avro binary encoding, the
same bytes as ``fastavro.schemaless_writer(..., strict_allow_default=True)``. It refuses (raises
:class:`Unfit`) every value :mod:`streams.avrocheck` refuses and anything it does not handle
(an unusual union, a naive datetime, a string that is not valid UTF-8), without saying why:
the codec then takes its slow path, which names the field (:meth:`streams.codec.AvroCodec.encode`).
So it only speeds up records that are valid, and never accepts one the checker would refuse.

Supported: null, boolean, int, long, float, double, bytes, string, enum, array, map, record,
timestamp-millis / timestamp-micros, and unions of null with one other type. A schema with any
other union gets no compiled writer (:func:`compile_writer` returns None).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

Writer = Callable[[bytearray, Any], None]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack
#: Zigzag varints of 0..63 (one byte each): most lengths, indexes and counts.
_SMALL = [bytes([n << 1]) for n in range(64)]
#: Encodings of recent larger longs (a file's rows share timestamps and their announcement
#: time); emptied when full. Dict operations are atomic, so threads may share it.
_RECENT: dict[int, bytes] = {}
_RECENT_MAX = 4096


class Unfit(Exception):
    """The value does not fit the schema (or is outside what the compiled writer handles)."""


class _Unsupported(Exception):
    """The schema uses something the compiled writer does not handle."""


def _long(out: bytearray, n: int) -> None:
    """Append ``n`` as a zigzag varint (Avro int / long)."""
    if 0 <= n < 64:
        out += _SMALL[n]
        return
    encoded = _RECENT.get(n)
    if encoded is None:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        encoded = _RECENT[n] = _varint((n << 1) ^ (n >> 63))
    out += encoded


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compile_writer(schema: Any, schemas: dict[str, Any] | None = None) -> Writer | None:
    """Compile a fastavro-parsed schema into a writer, or None when it is not supported;
    ``schemas`` are the parsed named schemas it may refer to by name (fastavro's
    ``named_schemas``)."""
    named = _Named(schemas or {})
    try:
        return _compile(schema, named)
    except _Unsupported:
        return None


class _Named(dict[str, Writer]):
    """Writers of named types by full name, compiling a referenced schema on first use."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        super().__init__()
        self.schemas = schemas


def _compile(schema: Any, named: _Named) -> Writer:
    if isinstance(schema, str):
        if schema not in named and schema in named.schemas:
            _compile(named.schemas[schema], named)
        if schema in named:
            return lambda out, v: named[schema](out, v)
        return _primitive(schema)
    if isinstance(schema, list):
        return _union(schema, named)
    t = schema["type"]
    logical = schema.get("logicalType")
    if logical == "timestamp-millis" and t == "long":
        return _timestamp(1000)
    if logical == "timestamp-micros" and t == "long":
        return _timestamp(1_000_000)
    if t == "record":
        return _record(schema, named)
    if t == "enum":
        index = {s: _encoded_long(i) for i, s in enumerate(schema["symbols"])}

        def enum(out: bytearray, v: Any) -> None:
            try:
                out += index[v]
            except (KeyError, TypeError):
                raise Unfit from None

        named[schema["name"]] = enum
        return enum
    if t == "array":
        items = _compile(schema["items"], named)

        def array(out: bytearray, v: Any) -> None:
            if not isinstance(v, list | tuple):
                raise Unfit
            if v:
                _long(out, len(v))
                for item in v:
                    items(out, item)
            out.append(0)

        return array
    if t == "map":
        values = _compile(schema["values"], named)

        def mapping(out: bytearray, v: Any) -> None:
            if type(v) is not dict:
                raise Unfit
            if v:
                _long(out, len(v))
                for key, item in v.items():
                    if type(key) is not str:
                        raise Unfit
                    _string(out, key)
                    values(out, item)
            out.append(0)

        return mapping
    if logical is not None and t in ("int", "long", "string", "bytes"):
        raise _Unsupported(f"logical type {logical}")
    return _compile(t, named)


def _encoded_long(n: int) -> bytes:
    out = bytearray()
    _long(out, n)
    return bytes(out)


def _union(schema: list[Any], named: _Named) -> Writer:
    """Unions of null and one other type: null writes branch 0 or 1, a value the other."""
    if len(schema) != 2 or "null" not in schema:
        raise _Unsupported("union")
    null_at = schema.index("null")
    other = _compile(schema[1 - null_at], named)
    null_tag, other_tag = _SMALL[null_at], _SMALL[1 - null_at]

    def union(out: bytearray, v: Any) -> None:
        if v is None:
            out += null_tag
        else:
            out += other_tag
            other(out, v)

    return union


#: How a record writes a field: strings and optional strings inline (most fields of most
#: records), anything else through the field's own writer.
_STRING, _OPTIONAL_STRING, _OTHER = 0, 1, 2


def _field_kind(schema: Any) -> tuple[int, bytes, bytes]:
    """(kind, tag of null, tag of the string) of a field's schema."""
    if schema == "string":
        return _STRING, b"", b""
    if isinstance(schema, list) and len(schema) == 2 and "string" in schema and "null" in schema:
        null_at = schema.index("null")
        return _OPTIONAL_STRING, _SMALL[null_at], _SMALL[1 - null_at]
    return _OTHER, b"", b""


def _record(schema: dict[str, Any], named: _Named) -> Writer:
    fields: list[tuple[str, int, bytes, bytes, Writer, bool, Any]] = []
    names: set[str] = set()
    small = _SMALL

    def record(out: bytearray, v: Any) -> None:
        if type(v) is not dict:
            raise Unfit
        if len(v) > len(names) or not v.keys() <= names:
            raise Unfit  # unknown fields
        for name, kind, null_tag, tag, write, has_default, default in fields:
            try:
                value = v[name]
            except KeyError:
                if not has_default:
                    raise Unfit from None
                value = default
            if kind == _OTHER:
                write(out, value)
                continue
            if value is None and kind == _OPTIONAL_STRING:
                out += null_tag
                continue
            if type(value) is not str:
                raise Unfit
            try:
                data = value.encode()
            except UnicodeEncodeError:
                raise Unfit from None
            n = len(data)
            out += tag
            out += small[n] if n < 64 else _encoded_long(n)
            out += data

    named[schema["name"]] = record  # before the fields: a record may refer to itself
    for f in schema["fields"]:
        has_default = "default" in f
        kind, null_tag, tag = _field_kind(f["type"])
        write = _compile(f["type"], named)
        fields.append((f["name"], kind, null_tag, tag, write, has_default, f.get("default")))
        names.add(f["name"])
    if any(isinstance(f[6], list | dict) and f[6] for f in fields):
        raise _Unsupported("non-empty container default")
    return record


def _string(out: bytearray, v: str) -> None:
    try:
        data = v.encode()
    except UnicodeEncodeError:
        raise Unfit from None
    n = len(data)
    out += _SMALL[n] if n < 64 else _encoded_long(n)
    out += data


def _primitive(name: str) -> Writer:
    if name == "null":

        def null(out: bytearray, v: Any) -> None:
            if v is not None:
                raise Unfit

        return null
    if name == "boolean":

        def boolean(out: bytearray, v: Any) -> None:
            if type(v) is not bool:
                raise Unfit
            out.append(1 if v else 0)

        return boolean
    if name in ("int", "long"):
        lo, hi = _INT32 if name == "int" else _INT64

        def integer(out: bytearray, v: Any) -> None:
            if type(v) is not int or not lo <= v <= hi:
                raise Unfit
            _long(out, v)

        return integer
    if name in ("float", "double"):
        pack = _DOUBLE if name == "double" else _FLOAT

        def real(out: bytearray, v: Any) -> None:
            if type(v) not in (int, float):
                raise Unfit
            try:
                out += pack(v)
            except (OverflowError, struct.error):
                raise Unfit from None

        return real
    if name == "string":

        def string(out: bytearray, v: Any) -> None:
            if type(v) is not str:
                raise Unfit
            _string(out, v)

        return string
    if name == "bytes":

        def raw(out: bytearray, v: Any) -> None:
            if type(v) not in (bytes, bytearray):
                raise Unfit
            _long(out, len(v))
            out += v

        return raw
    raise _Unsupported(name)


def _timestamp(per_second: int) -> Writer:
    micros = per_second == 1_000_000

    def timestamp(out: bytearray, v: Any) -> None:
        if type(v) is int:
            if not _INT64[0] <= v <= _INT64[1]:
                raise Unfit
            _long(out, v)
            return
        if type(v) is not dt.datetime or v.tzinfo is None:
            raise Unfit
        d = v - _EPOCH
        if micros:
            n = (d.days * 86400 + d.seconds) * per_second + d.microseconds
        else:
            n = (d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000
        _long(out, n)

    return timestamp
