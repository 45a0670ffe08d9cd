"""The OpenAPI 3.1 document, generated from the declared operations and their pydantic models.

Nothing here is written by hand per route: paths, parameters, bodies and responses come from
each :class:`~streams.api.routing.Operation`, and schemas from the same pydantic models that
validate requests and serialise responses (``components.schemas``, JSON Schema 2020-12 as
OpenAPI 3.1 uses it). Every operation documents the problem responses it can give, so a client
(or a conformance fuzzer) can rely on the status codes listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streams.api.problems import PROBLEM_JSON, ProblemDetail
from streams.api.routing import ApiRoutes, Operation

_REF = "#/components/schemas/{model}"

_ERROR_TEXT = {
    400: "Malformed request (bad JSON, bad cursor).",
    401: "Missing, malformed, unknown or revoked credentials.",
    403: "Not allowed for this caller (e.g. an expired link); `detail` says why.",
    404: "No such resource for this caller (another tenant's resources are not found).",
    409: "The request contradicts the current state.",
    413: "The request body is larger than api.max_body_bytes.",
    415: "The body is not application/json.",
    422: "The body or query failed validation; `errors` names each field.",
    503: "Kafka did not acknowledge the records in time; retry (with the same Idempotency-Key).",
}


def _errors_of(op: Operation) -> list[int]:
    codes = set(op.errors) | {400}
    if op.auth != "public":
        codes.add(401)
    if op.path_params or op.auth != "public":
        codes.add(404)
    if op.query is not None or op.body is not None:
        codes.add(422)
    if op.body is not None:
        codes |= {413, 415}
    return sorted(codes)


def _path_pattern(op: Operation, name: str) -> dict[str, str]:
    pattern = dict(op.patterns).get(name)
    return {"pattern": f"^{pattern}$"} if pattern else {}


def _parameters(op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", **_path_pattern(op, name)},
        }
        for name in op.path_params
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k != "description"},
            }
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _operation(op: Operation, refs: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": {},
    }
    if op.description:
        out["description"] = op.description
    out["security"] = [] if op.auth == "public" else [{op.auth: []}]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.response is not None:
        out["responses"][str(op.status)] = {
            "description": "Success.",
            "content": {"application/json": {"schema": refs[(op.response, "serialization")]}},
        }
    elif op.content_type is not None:
        out["responses"][str(op.status)] = {
            "description": "Success.",
            "content": {op.content_type: {"schema": {"type": "string"}}},
        }
    else:
        out["responses"]["204"] = {"description": "Done; no content."}
    problem = {"schema": refs[(ProblemDetail, "serialization")]}
    for code in _errors_of(op):
        out["responses"][str(code)] = {
            "description": _ERROR_TEXT[code],
            "content": {PROBLEM_JSON: problem},
        }
    return out


def build(groups: Sequence[ApiRoutes], version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``groups``."""
    ops = [op for g in groups for op in g.operations]
    models: list[tuple[type[BaseModel], Any]] = [(ProblemDetail, "serialization")]
    for op in ops:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    unique = list(dict.fromkeys(models))
    refs, defs = models_json_schema(unique, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry = _operation(op, refs)
        params = _parameters(op, schemas)
        if params:
            entry["parameters"] = params
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callstream control-plane API",
            "version": version,
            "description": "Tenants, API keys, connectors, source schemas, conversation "
            "ingest, results, lineage and dead-letter replay. Errors are RFC 9457 problem "
            "details. Tenant routes take 'Authorization: Bearer <API key>'; operator routes "
            "take the operator token.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": g.tag, "description": g.description} for g in groups],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "tenant": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant's API key (csk_...).",
                },
                "operator": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator token (api.operator_token).",
                },
            },
        },
    }
