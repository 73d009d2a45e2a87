"""Admin API of the access pipeline: signed URLs (JFrog's shape), URL-signing keys, IP and geo rules.

Every call needs an admin. Bodies are strict JSON objects: unknown fields, duplicate
keys and wrong types are a 400 that names the field.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from repository.errors import BadRequest, Conflict
from repository.http import keys as core
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.http.virtual_resolve import resolve, virtual_repo
from repository.paths import url_quote
from repository.tokens import Role
from wire.errors import InvalidPath
from wire.paths import check_artifact_path, check_repo_key
from wire.timestamps import iso

from .address import parse_network
from .context import access_context
from .middleware import access_control
from .rules import GEO_NEEDS_DATABASE, RuleSet, rules_from_json
from .signed_urls import VerifyKey

SIGNED_URL = "/artifactory/api/signed/url"
URL_KEYS = "/artifactory/api/signed/keys"
RULES = "/artifactory/api/access/rules"
DEFAULT_VALID_FOR = 24 * 3600
MAX_NUMBER = 2**63


def access_routes() -> list[web.AbstractRouteDef]:
    """Added to the edge's route table before the artifact API's ``api/`` catch-all."""
    return [
        web.post(SIGNED_URL, create_signed_url, name="signed_url_create"),
        web.get(URL_KEYS, list_url_keys, name="url_keys_list", allow_head=False),
        web.post(URL_KEYS, trust_url_key, name="url_key_trust"),
        web.post(URL_KEYS + "/rotate", rotate_url_key, name="url_key_rotate"),
        # not "rotate": DELETE .../rotate is a method the rotation call lacks, not a key's removal
        web.delete(URL_KEYS + "/{kid:(?!rotate$)[^/]+}", remove_url_key, name="url_key_remove"),
        web.get(RULES, get_rules, name="access_rules_get", allow_head=False),
        web.put(RULES, put_rules, name="access_rules_put"),
        web.delete(RULES, reset_rules, name="access_rules_reset"),
    ]


async def _json_body(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
    body = await read_json_object(request)
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; expected {', '.join(sorted(fields))}")
    return body


def _integer(body: dict[str, Any], name: str) -> int | None:
    """A positive integer field; left out is None, and anything else (null, NaN, 3600.0, a
    string) a 400."""
    if name not in body:
        return None
    value = body[name]
    if type(value) is not int or not 0 < value < MAX_NUMBER:
        raise BadRequest(f"'{name}' must be a positive integer")
    return value


# -- signed URLs -------------------------------------------------------------------


def _lifetime(body: dict[str, Any], max_lifetime: int) -> int:
    """``valid_for_secs``, or JFrog's ``expiry`` (epoch ms); a day by default."""
    valid_for, expiry = _integer(body, "valid_for_secs"), _integer(body, "expiry")
    if valid_for is not None and expiry is not None:
        raise BadRequest("Give 'valid_for_secs' or 'expiry', not both")
    if expiry is not None:
        valid_for = -(-(expiry - int(time.time() * 1000)) // 1000)
        if valid_for < 1:
            raise BadRequest("'expiry' is in the past")
    if valid_for is None:
        valid_for = min(DEFAULT_VALID_FOR, max_lifetime)
    if valid_for > max_lifetime:
        raise BadRequest(f"A signed URL may be valid for at most {max_lifetime} seconds")
    return valid_for


def _repo_path(value: Any) -> tuple[str, str]:
    if not isinstance(value, str):
        raise BadRequest("'repo_path' must be a string such as /releases-local/app/1.0/app.tar.gz")
    repo, _, path = value.removeprefix("/").partition("/")
    try:
        return check_repo_key(repo), check_artifact_path(path)
    except InvalidPath as exc:
        raise BadRequest(f"'repo_path' is not a file path: {exc.message}") from None


async def create_signed_url(request: web.Request) -> web.Response:
    """``POST /artifactory/api/signed/url``: the URL, as text, for a file this edge holds."""
    require_role(request, Role.admin)
    control = request.app[access_control]
    body = await _json_body(request, frozenset({"repo_path", "valid_for_secs", "expiry", "client_cidr"}))
    repo, path = _repo_path(body.get("repo_path"))
    valid_for = _lifetime(body, control.urls.max_lifetime)
    cidr = body.get("client_cidr")
    if "client_cidr" in body:
        if not isinstance(cidr, str):
            raise BadRequest("'client_cidr' must be a CIDR such as 198.51.100.0/24")
        try:
            cidr = str(parse_network(cidr))
        except ValueError as exc:
            raise BadRequest(f"'client_cidr' {exc}") from None
    virtual = virtual_repo(request, repo)
    if virtual is not None:  # 404 for a file that is not here (through a virtual repo: in no member)
        await resolve(request, virtual, path)
    else:
        await request.app[core.artifacts].file(repo, path)
    token = control.urls.issue(f"{repo}/{path}", valid_for, cidr)
    base = control.base_url or f"{request.scheme}://{request.host}"
    url = f"{base.rstrip('/')}/artifactory/{url_quote(f'{repo}/{path}')}?sig={token}"
    return web.Response(text=url, content_type="text/plain")


# -- URL-signing keys --------------------------------------------------------------


def _key_json(key: VerifyKey, signing_kid: str | None) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "source": key.source,
        "public_key": key.public_pem,
        "created": iso(key.created) if key.created else None,
        "signing": key.kid == signing_kid,
    }


async def list_url_keys(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    keyring = request.app[access_control].keyring
    keys = [_key_json(k, keyring.signing_kid) for k in keyring.known()]
    return json_response({"algorithm": keyring.algorithm, "signing_kid": keyring.signing_kid, "keys": keys})


async def trust_url_key(request: web.Request) -> web.Response:
    """Trust another issuer's Ed25519 public key: ``{"kid","public_key"}`` (PEM)."""
    require_role(request, Role.admin)
    body = await _json_body(request, frozenset({"kid", "public_key"}))
    if body.get("kid") == "rotate":
        raise BadRequest("'rotate' names the rotation call and cannot be a key id")
    keyring = request.app[access_control].keyring
    key, created = await keyring.trust(body.get("kid"), body.get("public_key"))  # type: ignore[arg-type]
    return json_response(_key_json(key, keyring.signing_kid), status=201 if created else 200)


async def rotate_url_key(request: web.Request) -> web.Response:
    """Make a new own key; it signs new URLs, and URLs signed before keep working."""
    require_role(request, Role.admin)
    keyring = request.app[access_control].keyring
    key = await keyring.rotate()
    return json_response(_key_json(key, keyring.signing_kid), status=201)


async def remove_url_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await request.app[access_control].keyring.remove(request.match_info["kid"])
    return web.Response(status=204)


# -- IP and geo rules --------------------------------------------------------------


def _rules_json(request: web.Request) -> dict[str, Any]:
    control = request.app[access_control]
    book, geo = control.rules, control.geo
    stored = book.stored
    return {
        "rules": [spec.to_json() for spec in book.current.specs],
        "source": "api" if stored is not None else "settings",
        "updated": iso(stored.updated) if stored is not None else None,
        "updated_by": stored.updated_by if stored is not None else None,
        "geo_unknown": book.geo_unknown,
        "geoip_database": None if geo is None else {"path": str(geo.path), "loaded": geo.loaded},
    }


async def get_rules(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return json_response(_rules_json(request))


async def put_rules(request: web.Request) -> web.Response:
    """Replace the whole rule set: ``{"rules":[{"repos","allow_cidrs","deny_cidrs",...}]}``."""
    principal = require_role(request, Role.admin)
    body = await _json_body(request, frozenset({"rules"}))
    if "rules" not in body:
        raise BadRequest("The body must have 'rules', a list of rule objects")
    try:
        specs = rules_from_json(body["rules"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    control = request.app[access_control]
    if control.geo is None and any(spec.uses_geo for spec in specs):
        raise Conflict(f"Country rules cannot work on this edge: {GEO_NEEDS_DATABASE}; nothing was changed.")
    ctx = request[access_context]
    # A rule without repos applies to the admin API too: a set that would refuse this very
    # request would lock every admin at this address out of the node, rules API included.
    denial = RuleSet(specs, control.rules.geo_unknown).check(None, ctx.client_ip, ctx.country)
    if denial is not None:
        raise Conflict(
            f"These rules would refuse this request ({denial.rule}) and lock you out of the node's API;"
            " nothing was changed. Narrow them with 'repos', or send them from an address they allow."
        )
    await control.rules.replace(specs, principal.subject)
    return json_response(_rules_json(request))


async def reset_rules(request: web.Request) -> web.Response:
    """Forget the rules stored through the API: the settings file's apply again."""
    require_role(request, Role.admin)
    await request.app[access_control].rules.reset()
    return json_response(_rules_json(request))
