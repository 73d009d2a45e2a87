"""Who is asking: Bearer tokens, X-JFrog-Art-Api, or basic auth with a token or a user's password.

A presented credential that does not resolve is a 401, never a silent fall back
to anonymous: a client with a typo in its token should hear about it.

A token issued for a known user acts as that user: the user's current role and
groups, so demoting or deleting the user takes effect on its tokens at once. A
token for any other name (a service such as a distributor) has the role it was
issued with.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from .errors import Unauthorized
from .tokens import ANONYMOUS, TOKEN_PREFIX, Principal, Role, TokenStore, secrets_equal

BOOTSTRAP_ADMIN = "admin"


class UserDirectory(Protocol):
    """Users with passwords, roles and groups (a node may have none)."""

    def principal(self, name: str) -> Principal | None:
        """The user's current identity, from memory; None for no such user."""

    async def authenticate(self, name: str, password: str) -> Principal | None:
        """The user, if ``password`` is theirs; None otherwise."""


@dataclass
class Authenticator:
    tokens: TokenStore
    admin_token: str | None = None
    users: UserDirectory | None = None

    @staticmethod
    def presents_nothing(headers: Mapping[str, str]) -> bool:
        """Whether no credential is presented (``identify`` would answer anonymous): told without a
        coroutine, for the anonymous downloads most requests are."""
        return not headers.get("X-JFrog-Art-Api") and not headers.get("Authorization")

    async def identify(self, headers: Mapping[str, str]) -> Principal:
        presented = _presented(headers)
        if presented is None:
            return ANONYMOUS
        username, secret = presented
        if self.admin_token and secrets_equal(secret, self.admin_token):
            return Principal(BOOTSTRAP_ADMIN, Role.admin)
        if username is not None and not secret.startswith(TOKEN_PREFIX):
            principal = await self.users.authenticate(username, secret) if self.users else None
        else:
            principal = await self._from_token(secret)
        if principal is None:
            raise Unauthorized("Bad credentials")
        return principal

    async def _from_token(self, secret: str) -> Principal | None:
        principal = await self.tokens.resolve(secret)
        if principal is None or self.users is None:
            return principal
        user = self.users.principal(principal.subject)
        if user is None:
            return principal
        return replace(user, token_id=principal.token_id)


def _presented(headers: Mapping[str, str]) -> tuple[str | None, str] | None:
    """(basic-auth user name or None, secret) as presented, or None when nothing was."""
    if api_key := headers.get("X-JFrog-Art-Api"):
        return None, api_key.strip()
    header = headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return None, value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed basic credentials") from None
        user, sep, password = decoded.partition(":")
        if sep and password:
            return user, password
    raise Unauthorized("Unsupported or malformed Authorization header")
