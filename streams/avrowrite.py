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

A record's writer is Python source generated for its fields and compiled once (no per-field
dispatch at run time; about a quarter faster than composed closures on callstream's records).
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


class FrozenRecord(dict[str, Any]):
    """A record value that never changes: a compiled writer encodes it once, with every check a
    plain dict gets, and appends the kept bytes every later time (values many records share,
    such as the verdict of a rule that found nothing to judge). Changing one raises TypeError;
    its arrays must be tuples and its nested records frozen too, so nothing it holds changes."""

    __slots__ = ("avro",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.avro: tuple[Writer, bytes] | None = None  # (the writer, its bytes for this value)

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("a FrozenRecord cannot change")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


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


_MISSING = object()


def _field_code(i: int, schema: Any, ns: dict[str, Any], named: _Named) -> list[str]:
    """Source lines writing field ``i``'s value ``x`` (the writer of a record, see
    :func:`_record`): strings, optional strings, ints, longs, doubles and booleans inline (most
    fields of most records), anything else through the field's own compiled writer, which
    ``ns`` then holds as ``w<i>``."""
    string = [
        "    if type(x) is not str:",
        "        raise Unfit",
        "    try:",
        "        b = x.encode()",
        "    except UnicodeEncodeError:",
        "        raise Unfit from None",
        "    n = len(b)",
        "    out += small[n] if n < 64 else encoded_long(n)",
        "    out += b",
    ]
    if schema == "string":
        return string
    if isinstance(schema, list) and len(schema) == 2 and "string" in schema and "null" in schema:
        null_at = schema.index("null")
        ns[f"null{i}"], ns[f"tag{i}"] = _SMALL[null_at], _SMALL[1 - null_at]
        inner = ["    " + line for line in string]
        return [
            "    if x is None:",
            f"        out += null{i}",
            "    else:",
            f"        out += tag{i}",
            *inner,
        ]
    if schema in ("int", "long"):
        ns[f"lo{i}"], ns[f"hi{i}"] = _INT32 if schema == "int" else _INT64
        return [
            f"    if type(x) is not int or not lo{i} <= x <= hi{i}:",
            "        raise Unfit",
            "    if 0 <= x < 64:",
            "        out += small[x]",
            "    else:",
            "        write_long(out, x)",
        ]
    if schema == "double":
        return [
            "    if type(x) is not float and type(x) is not int:",
            "        raise Unfit",
            "    try:",
            "        out += pack_double(x)",
            "    except (OverflowError, struct_error):",
            "        raise Unfit from None",
        ]
    if schema == "boolean":
        return [
            "    if type(x) is not bool:",
            "        raise Unfit",
            "    out.append(1 if x else 0)",
        ]
    ns[f"w{i}"] = _compile(schema, named)
    return [f"    w{i}(out, x)"]


def _record(schema: dict[str, Any], named: _Named) -> Writer:
    """The writer of a record: Python source generated for its fields, one statement block per
    field in schema order, then compiled. Field names and defaults reach the code only as
    variables of its namespace (``k<i>``, ``d<i>``), never as source text, so a schema cannot
    inject code."""
    name = schema["name"]
    named[name] = lambda out, v: named[name](out, v)  # a self-reference resolves at call time
    ns: dict[str, Any] = {
        "Unfit": Unfit,
        "small": _SMALL,
        "encoded_long": _encoded_long,
        "write_long": _long,
        "pack_double": _DOUBLE,
        "struct_error": struct.error,
        "MISSING": _MISSING,
    }
    names = frozenset(f["name"] for f in schema["fields"])
    ns["names"], ns["count"] = names, len(names)
    lines = [
        "def record(out, v):",
        "    if type(v) is not dict:",
        "        if type(v) is Frozen:",
        "            return frozen(out, v)",
        "        raise Unfit",
        "    if len(v) > count or not v.keys() <= names:",
        "        raise Unfit",
    ]
    for i, f in enumerate(schema["fields"]):
        default = f.get("default", _MISSING)
        if isinstance(default, list | dict) and default:
            raise _Unsupported("non-empty container default")
        ns[f"k{i}"], ns[f"d{i}"] = f["name"], default
        lines.append(f"    x = v.get(k{i}, d{i})")
        if default is _MISSING:
            lines += ["    if x is MISSING:", "        raise Unfit"]
        lines += _field_code(i, f["type"], ns, named)
    exec(compile("\n".join(lines), f"<avro writer of {name}>", "exec"), ns)  # noqa: S102
    record: Writer = ns["record"]

    def frozen(out: bytearray, v: FrozenRecord) -> None:
        kept = v.avro
        if kept is not None and kept[0] is record:
            out += kept[1]
            return
        start = len(out)
        record(out, dict(v))  # the first time: a plain dict's path, every check included
        v.avro = (record, bytes(out[start:]))

    ns["Frozen"], ns["frozen"] = FrozenRecord, frozen
    named[name] = record
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
