"""The edge registry: which edges exist, where they are, how to reach them, and whether they answer.

An edge's token is kept to call the edge and is never answered by any API. Adding the
same edge again with the same fields is a success (a retry after a time-out); the same
name with other fields is a 409: remove it first.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from repository.catalog import now_ms
from repository.db import Database
from repository.errors import BadRequest, Conflict, NotFound
from repository.sql import Sql
from wire.errors import InvalidPath
from wire.paths import CONTROL_RE, check_repo_key
from wire.timestamps import iso

from .webhook_events import EDGE_BACK, EDGE_OFFLINE, publish

PING = "/artifactory/api/system/ping"
PING_TIMEOUT = aiohttp.ClientTimeout(total=3, sock_connect=2)
EDGE_FIELDS = ("name", "url", "site_name", "city_name", "country_code", "token")
COUNTRY_RE = re.compile(r"[A-Za-z]{2}")
MAX_FIELD = 256


@dataclass(frozen=True)
class Edge:
    name: str
    url: str
    site_name: str
    city_name: str
    country_code: str
    token: str
    service_id: str
    created: int
    last_seen: int | None = None
    healthy: bool | None = None
    last_error: str | None = None

    def same_registration(self, other: Edge) -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in EDGE_FIELDS)

    def site_json(self) -> dict[str, str]:
        """The edge as Distribution names a target: ``{"service_id","name","type"}``."""
        return {"service_id": self.service_id, "name": self.name, "type": "edge"}

    def public_json(self) -> dict[str, Any]:
        """Everything but the token."""
        return {
            "name": self.name,
            "url": self.url,
            "site_name": self.site_name,
            "city_name": self.city_name,
            "country_code": self.country_code,
            "service_id": self.service_id,
            "type": "edge",
            "created": iso(self.created),
            "last_seen": iso(self.last_seen) if self.last_seen else None,
            "healthy": self.healthy,
            "last_error": self.last_error,
        }


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD:
        raise BadRequest(f"'{key}' is required: a non-empty string of at most {MAX_FIELD} characters")
    if CONTROL_RE.search(value):
        raise BadRequest(f"'{key}' may not hold control characters")
    return value.strip()


def check_edge_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BadRequest(f"'url' must be an http(s) URL with a host, like http://edge.example:8082, not {url!r}")
    try:
        parts.port  # noqa: B018  (a bad port raises)
    except ValueError:
        raise BadRequest(f"'url' has an invalid port: {url!r}") from None
    # the edge's base; "/artifactory" is added to every call
    path = parts.path.rstrip("/")
    path = path.removesuffix("/artifactory")
    return f"{parts.scheme}://{parts.netloc}{path}"


def parse_edge(body: dict[str, Any], *, created: int | None = None) -> Edge:
    """Validate a registration body; every field is required, nothing else is accepted."""
    unknown = sorted(set(body) - set(EDGE_FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; an edge has {', '.join(EDGE_FIELDS)}")
    name = _text(body, "name")
    try:
        check_repo_key(name)
    except InvalidPath:
        raise BadRequest(
            f"'name' must be letters, digits, '.', '_' or '-' (like a repository key), not {name!r}"
        ) from None
    country = _text(body, "country_code")
    if not COUNTRY_RE.fullmatch(country):
        raise BadRequest(f"'country_code' must be a two-letter country code like US or DE, not {country!r}")
    token = body.get("token")
    if not isinstance(token, str) or not token or len(token) > 4096 or any(ch <= " " for ch in token):
        raise BadRequest("'token' is required: the edge's API token (distributor or admin role)")
    return Edge(
        name=name,
        url=check_edge_url(_text(body, "url")),
        site_name=_text(body, "site_name"),
        city_name=_text(body, "city_name"),
        country_code=country.upper(),
        token=token,
        service_id="jfrt@" + uuid.uuid4().hex,
        created=created if created is not None else now_ms(),
    )


_COLUMNS = "name, url, site_name, city_name, country_code, token, service_id, created, last_seen, healthy, last_error"


def _edge(row: tuple[Any, ...]) -> Edge:
    values = list(row)
    values[9] = None if values[9] is None else bool(values[9])
    return Edge(*values)


class EdgeStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def add(self, edge: Edge) -> tuple[Edge, bool]:
        """Register ``edge``; answers the stored edge and whether it is new. Other fields under the name: 409."""
        return await self._database.run(self._add, edge)

    def _add(self, edge: Edge) -> tuple[Edge, bool]:
        with self._db.atomic():
            existing = self._get(edge.name)
            if existing is not None:
                if not existing.same_registration(edge):
                    raise Conflict(f"Edge '{edge.name}' is already registered with other settings; remove it first")
                return existing, False
            self._db.execute(
                "INSERT INTO edges (name, url, site_name, city_name, country_code, token, service_id, created)"
                " VALUES (:name, :url, :site_name, :city_name, :country_code, :token, :service_id, :created)",
                edge.__dict__,
            )
        return edge, True

    async def get(self, name: str) -> Edge | None:
        return await self._database.run(self._get, name)

    def _get(self, name: str) -> Edge | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM edges WHERE name = :name", {"name": name}).fetchone()
        return _edge(row) if row else None

    async def list(self) -> list[Edge]:
        rows = await self._database.run(
            lambda: self._db.execute(f"SELECT {_COLUMNS} FROM edges ORDER BY name").fetchall()
        )
        return [_edge(r) for r in rows]

    async def remove(self, name: str) -> None:
        cursor = await self._database.run(self._db.execute, "DELETE FROM edges WHERE name = :name", {"name": name})
        if not cursor.rowcount:
            raise NotFound(f"Edge '{name}' is not registered")

    async def record_health(self, name: str, healthy: bool, error: str | None = None) -> None:
        """What the last call to the edge showed: reachable (``last_seen`` now) or not, and why."""
        await self._database.run(self._record_health, name, healthy, error)

    def _record_health(self, name: str, healthy: bool, error: str | None) -> None:
        """A change of health is published (``edge.offline``, ``edge.back``) with it, in one transaction."""
        if healthy:
            sql = "UPDATE edges SET healthy = 1, last_seen = :at, last_error = NULL WHERE name = :name"
        else:
            sql = "UPDATE edges SET healthy = 0, last_error = :error WHERE name = :name"
        with self._db.atomic():
            row = self._db.execute("SELECT healthy, url FROM edges WHERE name = :name", {"name": name}).fetchone()
            if row is None:
                return
            self._db.execute(sql, {"name": name, "at": now_ms(), "error": error})
            was = row[0]
            if not healthy and was != 0:
                publish(self._db, EDGE_OFFLINE, {"edge": name, "url": row[1], "error": error or ""})
            elif healthy and was == 0:
                publish(self._db, EDGE_BACK, {"edge": name, "url": row[1]})


async def ping(session: aiohttp.ClientSession, edge: Edge) -> str | None:
    """None when the edge answers its ping with ``OK``; otherwise what went wrong."""
    try:
        async with session.get(edge.url + PING, timeout=PING_TIMEOUT) as resp:
            body = (await resp.content.read(64)).decode("utf-8", "replace").strip()
            if resp.status == 200 and body == "OK":
                return None
            return f"ping answered {resp.status} {body[:40]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"cannot reach {edge.url}: {exc or type(exc).__name__}"


async def check_health(session: aiohttp.ClientSession, store: EdgeStore, edges: list[Edge]) -> list[Edge]:
    """Ping every edge at once, record the answers, and answer the edges as they are now."""
    errors = await asyncio.gather(*(ping(session, e) for e in edges))
    for edge, error in zip(edges, errors, strict=True):
        await store.record_health(edge.name, error is None, error)
    return [e for e in [await store.get(e.name) for e in edges] if e is not None]
