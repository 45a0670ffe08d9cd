"""API errors as RFC 9457 problem details (``application/problem+json``).

::

    ApiError                  status, title, detail, errors (field path + message)
     ├── BadRequest           400: malformed JSON, bad cursor, bad parameter
     ├── Unauthorized         401: no, malformed, unknown or revoked credentials
 ├── Forbidden            403: the caller is known but may not do this (expired link, no
 │                             verified address)
     ├── NotFound             404: no such resource *for this caller* (another tenant's is 404 too)
     ├── Conflict             409: the request contradicts the current state (third active key,
     │                             incompatible schema change, duplicate name)
     ├── PayloadTooLarge      413: body over ``api.max_body_bytes``
     └── Unprocessable        422: the body or query fails validation; ``errors`` name each field

Handlers raise these (or :mod:`streams.control.errors`: not found is 404, conflict 409);
:func:`problem_middleware` turns them (and any unexpected exception, as a
500 that names nothing internal) into a problem+json response. Messages never hold secrets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from streams.control.errors import ConflictError, ControlError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    """One invalid field: where it is and what is wrong with it."""

    field: str = Field(description="Dotted path of the field, e.g. 'store.port' or 'items.3.id'.")
    message: str = Field(description="What is wrong.")


class ProblemDetail(BaseModel):
    """An error response (RFC 9457)."""

    type: str = Field("about:blank", description="A URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(None, description="What went wrong in this request.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[FieldError] | None = Field(None, description="Each invalid field, when any.")


class ApiError(Exception):
    """An error the API reports to the caller as a problem detail."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str | None = None, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors)

    def problem(self, instance: str | None = None) -> ProblemDetail:
        """Build the problem detail of this error."""
        return ProblemDetail(
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors or None,
        )


class BadRequest(ApiError):
    """400: the request is malformed."""

    status, title = 400, "Bad Request"


class Unauthorized(ApiError):
    """401: credentials missing, malformed, unknown or revoked."""

    status, title = 401, "Unauthorized"


class Forbidden(ApiError):
    """403: the caller is known but may not do this."""

    status, title = 403, "Forbidden"


class NotFound(ApiError):
    """404: no such resource for this caller."""

    status, title = 404, "Not Found"


class Conflict(ApiError):
    """409: the request contradicts the current state."""

    status, title = 409, "Conflict"


class PayloadTooLarge(ApiError):
    """413: the body is larger than ``api.max_body_bytes``."""

    status, title = 413, "Payload Too Large"


class Unprocessable(ApiError):
    """422: the body or the query fails validation."""

    status, title = 422, "Unprocessable Content"


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[FieldError]:
    """Turn a pydantic validation error into field errors with dotted paths."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [*prefix, *err["loc"]]
        out.append(FieldError(field=".".join(str(p) for p in loc) or "(body)", message=err["msg"]))
    return out


def problem_response(problem: ProblemDetail, headers: dict[str, str] | None = None) -> web.Response:
    """Serialise a problem detail as ``application/problem+json``."""
    body = problem.model_dump(exclude_none=True)
    return web.Response(
        status=problem.status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def api_error(exc: ControlError) -> ApiError:
    """The API error a control-plane error is: not found 404, a conflict 409 naming its field."""
    if isinstance(exc, ConflictError):
        blamed = [FieldError(field=exc.field, message=str(exc))] if exc.field else []
        return Conflict(str(exc), blamed)
    return NotFound(str(exc))


_STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every ``/v1`` error as problem+json: API errors, aiohttp's own, and bugs (500)."""
    try:
        return await handler(request)
    except ControlError as exc:
        return problem_response(api_error(exc).problem(request.path))
    except ApiError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="callstream"'} if exc.status == 401 else None
        return problem_response(exc.problem(request.path), headers)
    except web.HTTPException as exc:
        if not request.path.startswith("/v1") or exc.status < 400:
            raise
        title = _STATUS_TITLES.get(exc.status, exc.reason)
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        if exc.status == 413:
            detail = "the request body is larger than the limit (api.max_body_bytes)"
        problem = ProblemDetail(
            title=title, status=exc.status, detail=detail, instance=request.path
        )
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(problem, allow)
    except Exception:  # a bug: log it whole, tell the caller nothing internal
        log.exception("%s %s failed", request.method, request.path)
        problem = ProblemDetail(
            title="Internal Server Error",
            status=500,
            detail="the request failed; the error is in the service log",
            instance=request.path,
        )
        return problem_response(problem)


def json_body(data: Any) -> bytes:
    """Encode a JSON response body."""
    return json.dumps(data, separators=(",", ":"), default=str).encode()
