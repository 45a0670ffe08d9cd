"""A strict, fast type check of records against parsed Avro schemas.

fastavro's validator is correct but slow (about 100 us for a Conversation) and its writer is
lenient (it writes 1.5 or True into a ``long`` and wraps ints that overflow an ``int``). This
module compiles a parsed schema once into nested checker functions that run in a few
microseconds and report the first problem with its field path (``Conversation.source.row``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Checker = Callable[[Any, str], str | None]
"""Return None when ``value`` fits, else a message naming ``path``."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _kind(value: Any) -> str:
    return type(value).__name__


def compile_checker(schema: Any, named: dict[str, Any] | None = None) -> Checker:
    """Compile a fastavro-parsed schema into a checker."""
    named = {} if named is None else named
    return _compile(schema, named)


def _compile(schema: Any, named: dict[str, Any]) -> Checker:
    if isinstance(schema, str):
        if schema in named:
            return lambda v, p: named[schema](v, p)
        return _primitive(schema)
    if isinstance(schema, list):
        options = [_compile(s, named) for s in schema]
        accepts_null = "null" in schema

        def union(v: Any, p: str) -> str | None:
            if v is None and accepts_null:
                return None
            problems = [check(v, p) for check in options]
            if any(problem is None for problem in problems):
                return None
            return next(m for m in problems if m is not None)

        return union
    t = schema["type"]
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _timestamp
    if t == "record":
        fields = [(f["name"], _compile(f["type"], named), "default" in f) for f in schema["fields"]]
        names = {f[0] for f in fields}

        def record(v: Any, p: str) -> str | None:
            if not isinstance(v, dict):
                return f"{p} is a {_kind(v)}, expected a record"
            extra = v.keys() - names
            if extra:
                return f"{p} has unknown field(s) {', '.join(sorted(extra))}"
            for name, check, has_default in fields:
                if name not in v:
                    if has_default:
                        continue
                    return f"{p}.{name} is missing"
                problem = check(v[name], f"{p}.{name}")
                if problem is not None:
                    return problem
            return None

        named[schema["name"]] = record
        return record
    if t == "enum":
        symbols = frozenset(schema["symbols"])

        def enum(v: Any, p: str) -> str | None:
            if isinstance(v, str) and v in symbols:
                return None
            return f"{p} is {v!r}, expected one of {sorted(symbols)}"

        named[schema["name"]] = enum
        return enum
    if t == "array":
        items = _compile(schema["items"], named)

        def array(v: Any, p: str) -> str | None:
            if not isinstance(v, list | tuple):
                return f"{p} is a {_kind(v)}, expected a list"
            for i, item in enumerate(v):
                problem = items(item, f"{p}[{i}]")
                if problem is not None:
                    return problem
            return None

        return array
    if t == "map":
        values = _compile(schema["values"], named)

        def mapping(v: Any, p: str) -> str | None:
            if not isinstance(v, dict):
                return f"{p} is a {_kind(v)}, expected a map"
            for key, item in v.items():
                if not isinstance(key, str):
                    return f"{p} has a non-string key {key!r}"
                problem = values(item, f"{p}[{key!r}]")
                if problem is not None:
                    return problem
            return None

        return mapping
    return _compile(t, named)


def _primitive(name: str) -> Checker:
    if name == "null":
        return lambda v, p: None if v is None else f"{p} is {_kind(v)}, expected null"
    if name == "boolean":
        return lambda v, p: None if isinstance(v, bool) else f"{p} is {_kind(v)}, expected boolean"
    if name in ("int", "long"):
        lo, hi = _INT32 if name == "int" else _INT64

        def integer(v: Any, p: str) -> str | None:
            if type(v) is not int:
                return f"{p} is {_kind(v)} {v!r}, expected {name}"
            if not lo <= v <= hi:
                return f"{p} is {v}, out of range for {name}"
            return None

        return integer
    if name in ("float", "double"):
        return lambda v, p: (
            None if type(v) in (int, float) else f"{p} is {_kind(v)} {v!r}, expected {name}"
        )
    if name == "string":
        return lambda v, p: None if isinstance(v, str) else f"{p} is {_kind(v)}, expected string"
    if name == "bytes":
        return lambda v, p: (
            None if isinstance(v, bytes | bytearray) else f"{p} is {_kind(v)}, expected bytes"
        )
    raise ValueError(f"unsupported Avro type {name!r}")


def _timestamp(v: Any, p: str) -> str | None:
    if isinstance(v, dt.datetime):
        return None if v.tzinfo is not None else f"{p} is a naive datetime, expected aware"
    if type(v) is int:
        return None
    return f"{p} is {_kind(v)} {v!r}, expected a timestamp"
