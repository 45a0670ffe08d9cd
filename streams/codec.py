"""Avro codec: the schemas in ``avro/``, strict validation, schemaless encoding.

Schemas are data: one ``.avsc`` per file, file name = full schema name. Records are encoded
schemaless (the topic fixes the schema); every encode validates strictly, so a record that does
not match its schema raises :class:`~streams.errors.SchemaError` naming the field instead of
reaching Kafka.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from streams.avrocheck import Checker, compile_checker
from streams.avrowrite import Unfit, Writer, compile_writer
from streams.errors import SchemaError

DEFAULT_SCHEMAS_DIR = (Path(__file__).parent / "schemas").resolve()
"""The schemas shipped with callstream: ``streams/schemas`` is a symlink to the checkout's
``avro/`` (so this resolves to it in a checkout or editable install) and a real folder of the
same files in an installed wheel."""


class AvroCodec:
    """Loads every schema of a folder once; encodes and decodes records by schema name."""

    def __init__(self, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> None:
        self.schemas_dir = schemas_dir
        self._named: dict[str, Any] = {}
        self._parsed: dict[str, Any] = {}
        self._checkers: dict[str, Checker] = {}
        self._named_checkers: dict[str, Any] = {}
        files = sorted(schemas_dir.glob("*.avsc"))
        if not files:
            raise SchemaError(f"no .avsc schemas in {schemas_dir}")
        pending = {f: self._read(f) for f in files}
        # Parse in dependency order: retry those that reference a schema not parsed yet.
        while pending:
            progress = False
            errors: dict[Path, str] = {}
            for f, raw in list(pending.items()):
                try:
                    parsed: Any = fastavro.parse_schema(raw, named_schemas=self._named)
                except fastavro.schema.UnknownType as exc:
                    errors[f] = f"unknown type {exc.name!r}"
                    continue
                except (fastavro.schema.SchemaParseException, ValueError, TypeError) as exc:
                    raise SchemaError(f"schema {f.name}: {exc}") from exc
                name = parsed["name"]
                if f.stem != name:
                    raise SchemaError(f"schema {f.name}: file name must be the full name {name!r}")
                self._parsed[name] = parsed
                self._checkers[name] = compile_checker(parsed, self._named_checkers)
                del pending[f]
                progress = True
            if not progress:
                detail = "; ".join(f"{f.name}: {msg}" for f, msg in errors.items())
                raise SchemaError(f"unresolvable schema references: {detail}")
        self._writers: dict[str, Writer | None] = {
            name: compile_writer(parsed, self._named) for name, parsed in self._parsed.items()
        }

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"reading schema {path.name}: {exc}") from exc

    @property
    def names(self) -> list[str]:
        """Full names of the loaded schemas."""
        return sorted(self._parsed)

    def schema(self, name: str) -> Any:
        """Return the parsed schema called ``name``."""
        try:
            return self._parsed[name]
        except KeyError:
            raise SchemaError(f"no schema named {name!r} in {self.schemas_dir}") from None

    def validate(self, name: str, record: dict[str, Any]) -> None:
        """Raise SchemaError unless ``record`` matches the schema exactly (no missing or extra
        top-level fields, every value of its declared type)."""
        schema = self.schema(name)
        fields = schema["fields"]
        extra = set(record) - {f["name"] for f in fields}
        if extra:
            raise SchemaError(f"{name}: unknown field(s) {', '.join(sorted(extra))}")
        missing = [f["name"] for f in fields if f["name"] not in record and "default" not in f]
        if missing:
            raise SchemaError(f"missing field(s) {', '.join(f'{name}.{m}' for m in missing)}")
        try:
            validate(record, schema, raise_errors=True, strict=True)
        except ValidationError as exc:
            raise SchemaError(f"{name}: {'; '.join(map(str, exc.errors)) or exc}") from exc

    def encode(self, name: str, record: dict[str, Any], *, trusted: bool = False) -> bytes:
        """Validate and encode a record (schemaless binary).

        The check is :mod:`streams.avrocheck` (strict, names the field, about 5x faster than
        fastavro's validator); the writer then runs strictly (``strict_allow_default``: a field
        added later with a default may be left out, as schema evolution allows). ``trusted``
        skips the check for records callstream builds itself from validated data (results, case
        events): the strict writer still refuses unknown fields, missing fields without a default
        and wrong types.

        A record that fits goes through the writer compiled from the schema
        (:mod:`streams.avrowrite`: the same bytes, several times faster); one it refuses takes
        the path above, which names the problem.
        """
        writer = self._writers.get(name)
        if writer is not None:
            out = bytearray()
            try:
                writer(out, record)
                return bytes(out)
            except (Unfit, ValueError, TypeError, OverflowError, RecursionError):
                pass  # the checker and fastavro's strict writer say why
        schema = self.schema(name)
        problem = None if trusted else self._checkers[name](record, name)
        if problem is not None:
            raise SchemaError(problem)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise SchemaError(f"{name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode schemaless binary written with the same schema; whatever the bytes, the only
        error is :class:`SchemaError` (a timestamp past year 9999 raises ``OverflowError`` in
        fastavro: found by mutating valid records)."""
        try:
            result = fastavro.schemaless_reader(io.BytesIO(data), self.schema(name), None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise SchemaError(f"decoding {name}: {exc}") from exc
        if not isinstance(result, dict):
            raise SchemaError(f"decoding {name}: not a record")
        return result
