"""Signed URLs: ``/artifactory/{repo}/{path}?sig=<compact JWT>``, good for one path until it expires.

The token (README, "Signed URLs"): header ``{"alg","kid","typ":"JWT"}``; claims
``sub`` (the exact ``repo/path`` it opens, decoded, no leading slash), ``iss`` (who
issued it), ``iat`` and ``exp`` (integer seconds since the epoch) and, optionally,
``cidr`` (the client network it is bound to). Ed25519 (``EdDSA``) by default, so
edges verify with a public key and a compromised edge cannot mint another issuer's
URLs; HS256 with a shared secret as an option.

Keys are looked up by ``kid`` and the key decides the algorithm, never the token.
Several keys live at once (rotation); a removed key's URLs stop working. Verification
is strict beyond the signature: one canonical base64url spelling per segment, no
duplicate JSON keys, integers only for times, known claims only, and a lifetime no
longer than the configured maximum. Signature and path comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt import api_jws
from jwt.exceptions import InvalidTokenError

from repository.settings import InvalidSetting
from wire.jsonstrict import JsonRefused, loads

from .address import IPNetwork, parse_network
from .context import IPAddress

ALGORITHMS = ("EdDSA", "HS256")
KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{2,1024}\.[A-Za-z0-9_-]{2,2048}\.[A-Za-z0-9_-]{2,512}")
MAX_TOKEN = 4096
MIN_SECRET = 32
HEADER_FIELDS = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = frozenset({"sub", "iss", "iat", "exp"})
CLAIMS = REQUIRED_CLAIMS | {"cidr"}
MAX_TIME = 2**53  # seconds; anything larger is not a time any issuer meant
# Valid tokens remembered, so parallel Range requests on one URL check its signature once.
VERIFIED_CACHE_ENTRIES = 4096


class UrlRefused(Exception):
    """A signed URL that does not open this request. ``reason`` is for the audit trail;
    the client hears ``message``, which says no more than that the URL is expired or invalid."""

    def __init__(self, reason: str, message: str = "Invalid signed URL") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class UrlKeySpec:
    """One ``[[access.signed_urls.keys]]`` table: another issuer's Ed25519 public key, or an HS256 secret."""

    kid: str
    public_key: str | None = None  # PEM ("-----BEGIN PUBLIC KEY-----"), Ed25519
    secret: str | None = None  # HS256; at least 32 characters

    def __post_init__(self) -> None:
        if not KID_RE.fullmatch(self.kid):
            raise InvalidSetting("kid", "must be 1 to 64 letters, digits, '.', '_' or '-'")
        if (self.public_key is None) == (self.secret is None):
            raise InvalidSetting("public_key", "or 'secret' must be given, exactly one of them")
        if self.public_key is not None:
            try:
                load_public_key(self.public_key)
            except ValueError as exc:
                raise InvalidSetting("public_key", str(exc)) from None
        if self.secret is not None and len(self.secret) < MIN_SECRET:
            raise InvalidSetting("secret", f"must be at least {MIN_SECRET} characters")


@dataclass(frozen=True)
class VerifyKey:
    kid: str
    algorithm: str
    key: Ed25519PublicKey | bytes
    source: str  # "own" (this edge holds the private key), "trusted" (added by API), "settings"
    created: int | None = None

    @property
    def public_pem(self) -> str | None:
        if isinstance(self.key, Ed25519PublicKey):
            return public_pem(self.key)
        return None  # a shared secret is never shown


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    key: Ed25519PrivateKey | bytes


@dataclass(frozen=True)
class Claims:
    sub: str
    iss: str
    iat: int
    exp: int
    cidr: str | None
    network: IPNetwork | None


def load_public_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ValueError for anything else."""
    if not isinstance(pem, str) or len(pem) > 10_000:
        raise ValueError("is not a PEM public key")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ValueError("is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("is not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A kid derived from the key itself: the same key has the same id on every edge."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def b64url_decode_canonical(segment: str) -> bytes:
    """Decode one JWT segment, refusing every spelling but the canonical unpadded one.

    Base64 lets the last character of a segment vary in its unused bits; accepting that
    would give each signature several spellings that all verify.
    """
    if len(segment) % 4 == 1:
        raise UrlRefused("signature: bad base64url length")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:
        raise UrlRefused("signature: bad base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
        raise UrlRefused("signature: non-canonical base64url")
    return data


def _strict_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = loads(data, floats=False)
    except JsonRefused:
        raise UrlRefused(f"{what}: not strict JSON") from None
    if not isinstance(obj, dict):
        raise UrlRefused(f"{what}: not a JSON object")
    return obj


def _time(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int or not 0 <= value < MAX_TIME:
        raise UrlRefused(f"claim {name}: not a time in integer seconds")
    return value


class SignedUrls:
    """Issues and verifies tokens with the keys a ``UrlKeyring`` holds."""

    def __init__(self, keyring: Any, *, issuer: str, max_lifetime: int, leeway: int) -> None:
        self.keyring = keyring  # a keyring.UrlKeyring: signing_key() and verify_key(kid)
        self.issuer = issuer
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self._verified: LRUCache[str, tuple[Claims, VerifyKey]] = LRUCache(VERIFIED_CACHE_ENTRIES)

    def issue(self, repo_path: str, valid_for: int, client_cidr: str | None = None, now: int | None = None) -> str:
        """A token for ``repo/path`` (decoded, validated by the caller) for ``valid_for`` seconds."""
        if type(valid_for) is not int or not 1 <= valid_for <= self.max_lifetime:
            raise ValueError(f"the lifetime must be 1 to {self.max_lifetime} seconds")
        issued = int(time.time()) if now is None else now
        claims: dict[str, Any] = {"sub": repo_path, "iss": self.issuer, "iat": issued, "exp": issued + valid_for}
        if client_cidr is not None:
            claims["cidr"] = str(parse_network(client_cidr))
        signing: SigningKey = self.keyring.signing_key()
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
        return api_jws.encode(payload, signing.key, algorithm=signing.algorithm, headers={"kid": signing.kid})

    def verify(
        self, token: str, repo_path: str, client: IPAddress | None, now: int | None = None
    ) -> tuple[Claims, VerifyKey]:
        """The claims of a token good for ``repo_path`` and ``client`` now; raises UrlRefused otherwise.

        A token whose signature and claims were checked once is remembered (the same
        string always carries the same claims), while its key is still the one in the
        keyring; time, path and client are checked on every request.
        """
        cached = self._verified.get(token)
        if cached is not None and self.keyring.verify_key(cached[1].kid) is cached[1]:
            claims, key = cached
        else:
            claims, key = self._verify_token(token)
            self._verified[token] = (claims, key)
        current = int(time.time()) if now is None else now
        if current > claims.exp + self.leeway:
            raise UrlRefused(f"exp: expired at {claims.exp}", "Signed URL has expired")
        if claims.iat > current + self.leeway:
            raise UrlRefused(f"iat: issued in the future ({claims.iat})")
        if not hmac.compare_digest(claims.sub.encode(), repo_path.encode()):
            raise UrlRefused("sub: signed for another path")
        network = claims.network
        if network is not None and (client is None or client.version != network.version or client not in network):
            raise UrlRefused(f"cidr: client {client} is outside {network}")
        return claims, key

    def _verify_token(self, token: str) -> tuple[Claims, VerifyKey]:
        """Spelling, header, key, signature and the claims' shape: what does not change with time."""
        if not token or len(token) > MAX_TOKEN or not TOKEN_RE.fullmatch(token):
            raise UrlRefused("token: malformed")
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = _strict_object(b64url_decode_canonical(header_b64), "header")
        b64url_decode_canonical(payload_b64)
        b64url_decode_canonical(signature_b64)
        if not set(header) <= HEADER_FIELDS or header.get("typ", "JWT") != "JWT":
            raise UrlRefused("header: unexpected fields")
        kid = header.get("kid")
        key: VerifyKey | None = self.keyring.verify_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise UrlRefused(f"kid: unknown key {str(kid)[:64]!r}")
        if header.get("alg") != key.algorithm:
            raise UrlRefused(f"alg: {str(header.get('alg'))[:16]!r} is not the algorithm of key {kid}")
        try:
            payload = api_jws.decode_complete(token, key.key, algorithms=[key.algorithm])["payload"]
        except InvalidTokenError:
            raise UrlRefused(f"signature: does not verify with key {kid}") from None
        return self._claims(_strict_object(payload, "claims")), key

    def _claims(self, claims: dict[str, Any]) -> Claims:
        missing = REQUIRED_CLAIMS - set(claims)
        if missing or not set(claims) <= CLAIMS:
            raise UrlRefused("claims: missing or unknown claims")
        iat, exp = _time(claims, "iat"), _time(claims, "exp")
        sub, iss, cidr = claims["sub"], claims["iss"], claims.get("cidr")
        if not isinstance(sub, str) or not isinstance(iss, str) or not (cidr is None or isinstance(cidr, str)):
            raise UrlRefused("claims: sub, iss and cidr must be strings")
        if not 0 < exp - iat <= self.max_lifetime:
            raise UrlRefused(f"claims: lifetime {exp - iat} s is not 1 to {self.max_lifetime} s")
        network = None
        if cidr is not None:
            try:
                network = parse_network(cidr)
            except ValueError:
                raise UrlRefused("cidr: not a network") from None
        return Claims(sub, iss, iat, exp, cidr, network)
