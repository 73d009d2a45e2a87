"""``/access/api/v1/tokens``: issue and revoke API tokens (JFrog Access's paths and fields)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.errors import BadRequest, Conflict, Forbidden, NotFound
from repository.tokens import Principal, Role, TokenInfo
from wire.timestamps import iso

from . import keys
from .auth import require_role
from .json_body import read_json_object
from .responses import json_response

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
TOKEN_FIELDS = frozenset({"username", "subject", "role", "scope", "description", "expires_in"})


def token_json(info: TokenInfo) -> dict[str, Any]:
    return {
        "token_id": info.id,
        "role": info.role.value,
        "subject": info.subject,
        "description": info.description,
        "created": iso(info.created),
        "expires": iso(info.expires) if info.expires else None,
        "revoked": info.revoked is not None,
    }


async def create_token(request: web.Request) -> web.Response:
    """Admins issue tokens for anyone; a user may issue tokens for itself.

    A token for a known user acts with that user's role, so its role may only be left
    out or be the user's; a token for any other name has the role it asks for.
    """
    issuer = _token_issuer(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - TOKEN_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; expected some of {', '.join(sorted(TOKEN_FIELDS))}")
    for name, alias in (("username", "subject"), ("role", "scope")):
        if name in body and alias in body:
            raise BadRequest(f"Give '{name}' or its alias '{alias}', not both")
    users = request.app[keys.authenticator].users
    own = issuer.role is not Role.admin
    default_subject = issuer.subject if own else body.get("role", body.get("scope", "reader"))
    subject = body.get("username", body.get("subject", default_subject))
    description = body.get("description", "")
    expires_in = body.get("expires_in")
    if not isinstance(subject, str) or not subject or len(subject) > 128:
        raise BadRequest("'username' must be a non-empty string of at most 128 characters")
    if own and subject != issuer.subject:
        request[keys.denied_by] = f"'{issuer.subject}' may issue tokens for itself only"
        raise Forbidden("A user may issue tokens for itself only")
    user = users.principal(subject) if users is not None else None
    role = body.get("role", body.get("scope", user.role.value if user and user.role else "reader"))
    if not isinstance(role, str) or role not in Role.__members__:
        raise BadRequest(f"Unknown role {role!r}; expected one of {', '.join(Role.__members__)}")
    if user is not None and user.role is not None and role != user.role.value:
        raise Conflict(f"User '{subject}' has the role {user.role.value}; its tokens act with that role")
    if not isinstance(description, str) or len(description) > 1024:
        raise BadRequest("'description' must be a string of at most 1024 characters")
    if "expires_in" in body and (type(expires_in) is not int or not 0 <= expires_in <= MAX_EXPIRES_IN):
        raise BadRequest(f"'expires_in' must be an integer number of seconds up to {MAX_EXPIRES_IN} (0: never)")
    info, secret = await request.app[keys.tokens].create(Role(role), subject, description, expires_in or None)
    answer = token_json(info) | {
        "access_token": secret,
        "token_type": "Bearer",
        "scope": info.role.value,
        "expires_in": expires_in or 0,
    }
    return json_response(answer, status=201)


def _token_issuer(request: web.Request) -> Principal:
    """The caller, if it may issue tokens: an admin, or a known user (for itself)."""
    principal = request[keys.principal]
    users = request.app[keys.authenticator].users
    if principal.authenticated and users is not None and users.principal(principal.subject) is not None:
        return principal
    return require_role(request, Role.admin)


async def list_tokens(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    tokens = await request.app[keys.tokens].list()
    return json_response({"tokens": [token_json(t) for t in tokens]})


async def revoke_token(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    if not await request.app[keys.tokens].revoke(request.match_info["token_id"]):
        raise NotFound("Token not found")
    return web.Response(status=204)
