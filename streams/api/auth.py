"""Who is calling: the operator token or a tenant's API key (``Authorization: Bearer ...``).

Refusals are 401 and never say whether a key exists: unknown, malformed and revoked keys and
keys of a disabled tenant get the same answer. The operator token is compared in constant time;
API keys are checked by :func:`streams.control.keys.authenticate`. :func:`operator_guard`
protects the operator-only route outside ``/v1`` (``/connectors``): there a valid tenant key is
known but not allowed, 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from streams.api.context import ApiContext
from streams.api.problems import Forbidden, Unauthorized
from streams.api.routing import Auth, Authenticate, Principal, bearer_token
from streams.control import keys

_BAD_KEY = "invalid API key: unknown, revoked or malformed, or its tenant is disabled"


def authenticator(ctx: ApiContext) -> Authenticate:
    """Return the function that authenticates a request for an operation's ``auth``."""

    async def authenticate(request: web.Request, auth: Auth) -> Principal:
        if auth == "public":
            return Principal()
        token = bearer_token(request)
        if auth == "operator":
            expected = ctx.settings.api.operator_token
            if expected is None:
                raise Unauthorized("operator routes are off: set api.operator_token")
            if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
                raise Unauthorized("this route needs the operator token")
            return Principal(operator=True)
        found = await keys.authenticate(ctx.engine, token)
        if found is None:
            raise Unauthorized(_BAD_KEY)
        return Principal(tenant=found.tenant, key_id=found.key_id, user_id=found.user_id)

    return authenticate


def operator_guard(ctx: ApiContext) -> Callable[[web.Request], Awaitable[None]]:
    """Return the check of ``/connectors``: pass the operator token; refuse anything else with
    401 as the ``/v1`` operator routes do, except a tenant's valid API key: 403."""
    authenticate = authenticator(ctx)

    async def check(request: web.Request) -> None:
        token = bearer_token(request)
        try:
            await authenticate(request, "operator")
        except Unauthorized:
            if await keys.authenticate(ctx.engine, token) is not None:
                raise Forbidden(
                    "this route lists every tenant's connectors: it needs the operator token, "
                    "not a tenant's API key"
                ) from None
            raise

    return check
