"""The first steps of the access pipeline: client address, IP rules, geo rules, signed URLs.

``AccessControl.admit`` runs them for every request, inside the edge's one middleware layer
(edge/pipeline.py): after the audit step has made the request's ``AccessContext`` and inside
the error mapping, ending with identity (``identify``). Before the rules, the copies this
process keeps (rules, keys, users, tokens, catalog entries) are refreshed if another process of
the node changed what they copy (repository/generation.py). It fills the context (client
address, country, repo, path), refuses with 403 what the rules refuse (``denied_by`` says which
rule), and turns a valid ``sig`` into a reader identity for that one request; an invalid
``sig`` is a 403, never a fall back to anonymous.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from repository.errors import Forbidden
from repository.generation import HotCopies
from repository.http import keys as core
from repository.http.middlewares import identify
from repository.http.setup import database
from repository.paths import decode_raw, remembered, split_repo_path
from repository.tokens import Principal, Role
from wire.errors import InvalidPath
from wire.paths import check_artifact_path, check_repo_key

from ..keys import settings_key, starts_node_key
from .address import ClientAddress, parse_network
from .context import AccessContext, IPAddress
from .geo import GeoDatabase
from .rules import RuleBook
from .signed_urls import SignedUrls, UrlRefused
from .url_keys import UrlKeyring

log = logging.getLogger(__name__)

ARTIFACTORY = "/artifactory/"
API = "/artifactory/api/"
STORAGE_API = "/artifactory/api/storage/"
SIGNED_METHODS = ("GET", "HEAD")


class GeoNotReady(Exception):
    """Why readiness fails its ``geoip`` check (the message goes to the log)."""


@dataclass
class AccessControl:
    address: ClientAddress
    rules: RuleBook
    geo: GeoDatabase | None
    keyring: UrlKeyring
    urls: SignedUrls
    base_url: str | None
    # what this process keeps copies of (rules, keys, users, tokens, catalog entries)
    copies: HotCopies
    geo_max_age_days: int = 0

    def admit(self, request: web.Request, ctx: AccessContext) -> Awaitable[None] | None:
        """The access steps for one request, up to the handler: fills ``ctx`` (client address,
        country, repo, path), refuses with 403 what the rules refuse, opens a signed URL, and
        ends with identity. Before them, the copies this process keeps are brought up to date.

        None when the request is admitted without waiting (the usual case: copies current, an
        anonymous caller or a signed URL), which spares every such request a coroutine; else
        what to await before the handler."""
        address = self.address
        client = address.resolve(request.remote, request.headers.getall(address.header, ()))
        ctx.client_ip = client  # first: a request that fails any later step is still recorded with it
        if self.copies.stale():  # another worker changed rules, keys, users, tokens or the catalog
            return self._admit_when_current(request, ctx, client)
        return self._judge(request, ctx, client)

    async def _admit_when_current(self, request: web.Request, ctx: AccessContext, client: IPAddress | None) -> None:
        await self.copies.wait()
        if (identifying := self._judge(request, ctx, client)) is not None:
            await identifying

    def _judge(self, request: web.Request, ctx: AccessContext, client: IPAddress | None) -> Awaitable[None] | None:
        """The rules, a signed URL, then identity (whose check of a credential is answered to await)."""
        ctx.repo, ctx.path = request_target(request.raw_path)
        if self.geo is not None:
            ctx.country = self.geo.country(client)
        rules = self.rules.current
        if rules:
            denial = rules.check(ctx.repo, client, ctx.country)
            if denial is not None:
                raise _refuse(ctx, denial.rule, denial.message)
        if request.query_string and "sig" in request.query:  # most requests have no query to parse
            _open_signed_url(request, self.urls, ctx, client)
        return identify(request)

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """``geoip`` while countries are in use: a database is configured, or country rules are
        in force (stored through the API before such rules needed a database)."""
        if self.geo is None and not self.rules.current.uses_geo:
            return {}
        return {"geoip": self._check_geo}

    async def _check_geo(self) -> None:
        if self.geo is None:
            raise GeoNotReady("country rules are in force without access.geoip_database")
        problem = self.geo.problem(self.geo_max_age_days, time.time())
        if problem is not None:
            raise GeoNotReady(problem)


access_control = web.AppKey("access_control", AccessControl)


async def access_ctx(app: web.Application) -> AsyncIterator[None]:
    """Rules (stored ones over the settings file's), URL-signing keys (the first made on first
    start), and the geo database with a task that reloads it when its file changes."""
    settings = app[settings_key]
    access = settings.access
    db = app[database]
    rules = RuleBook(db, access.rules, access.geo_unknown)
    await rules.load()
    signed = access.signed_urls
    keyring = UrlKeyring(db, settings.url_signing_dir, signed.keys, signed.algorithm)
    await keyring.open()
    urls = SignedUrls(
        keyring, issuer=signed.issuer or settings.node_id, max_lifetime=signed.max_lifetime, leeway=signed.leeway
    )
    geo, watcher = None, None
    if access.geoip_database is not None:
        geo = GeoDatabase(access.geoip_database, settings.data_dir / "geoip")
        if app[starts_node_key]:  # a restarted worker leaves the other workers' snapshots alone
            await asyncio.to_thread(geo.clear_snapshots)
        await geo.refresh()
        if not geo.loaded:
            log.warning("geo database %s is not usable: geo rules answer '%s'", geo.path, access.geo_unknown)
        watcher = asyncio.create_task(geo.watch(), name="geo-database-watch")
    address = ClientAddress([parse_network(c) for c in access.trusted_proxies], access.forwarded_header)
    control = AccessControl(address, rules, geo, keyring, urls, signed.base_url, db.copies, access.geoip_max_age_days)
    app[access_control] = control
    app[core.readiness_checks] = control.readiness_checks
    yield
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if geo is not None:
        await geo.close()


def request_target(raw_path: str) -> tuple[str | None, str | None]:
    """The repo and path a request is about (artifact and storage API paths), decoded as the
    handlers decode them; None where it is about none, or they are not valid names."""
    return _target(raw_path.split("?", 1)[0])


@remembered
def _target(raw: str) -> tuple[str | None, str | None]:
    if raw.startswith(STORAGE_API):
        tail = raw[len(STORAGE_API) :]
    elif raw.startswith(ARTIFACTORY) and not raw.startswith(API):
        tail = raw[len(ARTIFACTORY) :]
    else:
        return None, None
    try:
        repo, _, path = decode_raw(tail).partition("/")
        check_repo_key(repo)
    except InvalidPath:
        return None, None
    path = path.removesuffix("/")
    try:
        return repo, check_artifact_path(path) if path else None
    except InvalidPath:
        return repo, None


def _refuse(ctx: AccessContext, rule: str, message: str) -> Forbidden:
    ctx.denied_by = rule
    return Forbidden(message)


def _open_signed_url(request: web.Request, urls: SignedUrls, ctx: AccessContext, client: IPAddress | None) -> None:
    """A valid ``sig`` makes this one request a reader's; anything else about it is a 403."""
    signatures = request.query.getall("sig")
    raw = request.raw_path.split("?", 1)[0]
    if len(signatures) != 1:
        raise _refuse(ctx, "signed-url: sig given more than once", "Invalid signed URL")
    if not raw.startswith(ARTIFACTORY) or raw.startswith(API):
        raise _refuse(ctx, "signed-url: not an artifact path", "Signed URLs are good for artifact downloads only")
    if request.method not in SIGNED_METHODS:
        raise _refuse(ctx, f"signed-url: method {request.method}", "Signed URLs are good for GET and HEAD only")
    try:
        repo, path = split_repo_path(raw[len(ARTIFACTORY) :], allow_root=False)
    except InvalidPath:
        raise _refuse(ctx, "signed-url: invalid path", "Invalid signed URL") from None
    try:
        claims, key = urls.verify(signatures[0], f"{repo}/{path}", client)
    except UrlRefused as exc:
        raise _refuse(ctx, f"signed-url: {exc.reason}", exc.message) from None
    request[core.principal] = Principal(claims.iss, Role.reader)
    ctx.subject, ctx.signed_kid, ctx.signed_iat = claims.iss, key.kid, claims.iat
