"""Who is asking: Bearer tokens, X-JFrog-Art-Api, or basic auth with a token as password.

A presented credential that does not resolve is a 401, never a silent fall back
to anonymous: a client with a typo in its token should hear about it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Unauthorized
from .tokens import ANONYMOUS, Principal, Role, TokenStore, secrets_equal

BOOTSTRAP_ADMIN = "admin"


@dataclass
class Authenticator:
    tokens: TokenStore
    admin_token: str | None = None

    async def identify(self, headers: Mapping[str, str]) -> Principal:
        secret = _presented_secret(headers)
        if secret is None:
            return ANONYMOUS
        if self.admin_token and secrets_equal(secret, self.admin_token):
            return Principal(BOOTSTRAP_ADMIN, Role.admin)
        principal = await self.tokens.resolve(secret)
        if principal is None:
            raise Unauthorized("Bad credentials")
        return principal


def _presented_secret(headers: Mapping[str, str]) -> str | None:
    if api_key := headers.get("X-JFrog-Art-Api"):
        return api_key.strip()
    header = headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed basic credentials") from None
        _user, sep, password = decoded.partition(":")
        if sep and password:
            return password
    raise Unauthorized("Unsupported or malformed Authorization header")
