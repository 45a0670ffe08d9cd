"""Users of the caller's tenant and the verification of their e-mail addresses."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from streams import mail
from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import BadRequest, Forbidden, NotFound
from streams.api.routing import ApiRoutes, Call
from streams.control import users
from streams.control.listing import cursor_key
from streams.control.users import Link, User, UserIn

log = logging.getLogger(__name__)

VERIFY_PATH = "/v1/email-verification"
"""Where the mailed link points: outside /v1/users/ so it never meets /v1/users/{user_id}."""

routes = ApiRoutes(
    "users",
    "People of the caller's tenant; an address is verified through a link mailed to it before "
    "any mail goes there. API keys may act for a user.",
)


class UserMailed(User):
    """A user and whether its new verification link went out."""

    verification_sent: bool = Field(description="The link was handed to the mail relay.")
    verification_error: str | None = Field(
        None, description="Why the link could not be sent (ask for a new one later)."
    )


class VerifyQuery(BaseModel):
    """The token of a verification link."""

    token: str = Field(min_length=1, max_length=200, description="The token from the mail.")


def public_base(call: Call) -> str:
    """The base URL of links in mails: ``http.public_url``, else this listener's address
    (never the request's Host header, which the caller controls)."""
    configured = call.ctx.settings.http.public_url
    if configured:
        return configured.rstrip("/")
    sockname = call.request.transport.get_extra_info("sockname") if call.request.transport else None
    port = sockname[1] if sockname else call.ctx.settings.http.port
    return f"http://{call.ctx.settings.http.host}:{port}"


async def _send_link(call: Call, link: Link) -> None:
    """Mail the verification link; :class:`~streams.mail.MailError` when it could not go."""
    url = f"{public_base(call)}{VERIFY_PATH}?token={link.token}"
    hours = int(users.TOKEN_LIFETIME.total_seconds() // 3600)
    text = (
        f"Hello {link.user.name},\n\n"
        f"Confirm that {link.user.email} is your address for callstream by opening this link "
        f"within {hours} hours:\n\n{url}\n\n"
        "If you did not expect this mail, ignore it: nothing changes.\n"
    )
    settings = call.ctx.settings.mail
    message = mail.compose(settings, [link.user.email], "Confirm your e-mail address", text)
    await mail.send(settings, message)


@routes.post(
    "/v1/users",
    summary="Create a user and mail a verification link",
    body=UserIn,
    response=UserMailed,
    status=201,
    errors=(409,),
)
async def create_user(call: Call) -> UserMailed:
    """Create a user; the link is mailed (a mail failure is reported, the user stays)."""
    link = await users.create(
        call.ctx.engine, call.tenant, call.body, call.principal.actor, call.ctx.clock.now()
    )
    return await _mailed(call, link)


async def _mailed(call: Call, link: Link) -> UserMailed:
    """Mail the link; report whether it went (the relay's error when it did not)."""
    try:
        await _send_link(call, link)
    except mail.MailError as exc:
        log.warning("verification mail for user %s not sent: %s", link.user.id, exc)
        return UserMailed(
            **link.user.model_dump(), verification_sent=False, verification_error=str(exc)
        )
    return UserMailed(**link.user.model_dump(), verification_sent=True)


@routes.get("/v1/users", summary="List users", query=PageQuery, response=Page[User])
async def list_users(call: Call) -> Page[User]:
    """List the tenant's users, oldest first."""
    try:
        after = cursor_key(decode_cursor(call.query.cursor, 2))
    except ValueError as exc:
        raise BadRequest("invalid cursor: pass next_cursor of the previous page") from exc
    limit = min(call.query.limit, call.ctx.settings.api.max_page_size)
    async with call.ctx.engine.connect() as conn:
        items, nxt = await users.list_page(conn, call.tenant, limit, after)
    return Page[User](items=items, next_cursor=encode_cursor(nxt) if nxt else None)


@routes.get(
    VERIFY_PATH,
    summary="Verify an address (the link of the mail)",
    auth="public",
    query=VerifyQuery,
    response=User,
    errors=(403, 404),
    description="Public: the token is the credential. An unknown or already used link is 404, "
    "an expired one 403; either way ask for a new link.",
)
async def verify_user(call: Call) -> User:
    """Mark the token's user verified."""
    try:
        return await users.verify(call.ctx.engine, call.query.token, call.ctx.clock.now())
    except users.TokenRefused as exc:
        raise (Forbidden(str(exc)) if exc.expired else NotFound(str(exc))) from exc


@routes.get("/v1/users/{user_id}", summary="Get a user", response=User)
async def get_user(call: Call) -> User:
    """Return one of the tenant's users."""
    async with call.ctx.engine.connect() as conn:
        return await users.get(conn, call.tenant, call.params["user_id"])


@routes.delete(
    "/v1/users/{user_id}",
    summary="Delete a user",
    errors=(409,),
    description="409 while an active API key acts for the user: revoke it first.",
)
async def delete_user(call: Call) -> None:
    """Delete one of the tenant's users."""
    await users.delete(call.ctx.engine, call.tenant, call.params["user_id"], call.principal.actor)


@routes.post(
    "/v1/users/{user_id}/verification",
    summary="Mail a new verification link (the previous one stops working)",
    response=UserMailed,
)
async def send_verification(call: Call) -> UserMailed:
    """Issue and mail a new link; a mail failure is reported in the answer."""
    link = await users.new_link(
        call.ctx.engine,
        call.tenant,
        call.params["user_id"],
        call.principal.actor,
        call.ctx.clock.now(),
    )
    return await _mailed(call, link)
