"""The circle of trust, set up the way an operator does it, through the services' REST APIs.

On each edge (admin token): trust the Distribution service's public key and issue a token
with the distributor role. On the service: register each edge with that token. Every step
can run again: the same key is trusted again (200), a token the edge still accepts is kept,
a registration that changed (another port, another token) is replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.protocol import BUNDLES, TRUSTED_KEYS

from . import rest
from .rest import CallFailed, expect

V1 = "/distribution/api/v1"
KEY_ALIAS = "dist-main"
DISTRIBUTOR_SUBJECT = "distribution"
# Where the demo edges pretend to be; more edges get generic places.
PLACES = (("us-east", "nyc", "US"), ("eu-central", "fra", "DE"))

Say = Callable[[str], None]


@dataclass(frozen=True)
class EdgeTarget:
    """An edge as the Distribution service reaches it, with the admin token its operator holds."""

    name: str
    url: str
    admin_token: str
    site: str
    city: str
    country: str


def edge_target(index: int, url: str, admin_token: str, name: str | None = None) -> EdgeTarget:
    """The ``index``-th edge (0-based): ``edge-1`` in us-east, ``edge-2`` in eu-central, then ``site-N``."""
    site, city, country = PLACES[index] if index < len(PLACES) else (f"site-{index + 1}", "nowhere", "US")
    return EdgeTarget(name or f"edge-{index + 1}", url.rstrip("/"), admin_token, site, city, country)


class State:
    """Secrets that must survive a restart (admin and distributor tokens), in one JSON file only its owner reads."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path is not None and path.exists():
            self.data = json.loads(path.read_text())

    def get(self, section: str, key: str) -> str | None:
        value = self.data.get(section, {}).get(key)
        return value if isinstance(value, str) else None

    def set(self, section: str, key: str, value: str) -> None:
        self.data.setdefault(section, {})[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=2, sort_keys=True)
            os.replace(temp, self.path)


def public_key(distribution_url: str) -> str:
    """The service's armored public signing key (public: no token needed)."""
    answer = expect((200,), "GET", f"{distribution_url}{V1}/keys/gpg/public")
    return answer.decode() if isinstance(answer, bytes) else str(answer)


def trust_key(edge: EdgeTarget, armored: str, alias: str = KEY_ALIAS) -> str:
    """Make ``edge`` trust the key under ``alias``, replacing another key held under that alias; its fingerprint."""
    url, body = edge.url + TRUSTED_KEYS, {"alias": alias, "public_key": armored}
    status, answer = rest.request("POST", url, edge.admin_token, body)
    if status == 409:  # the alias names an older key of a service whose data was wiped
        expect((204,), "DELETE", f"{url}/{alias}", edge.admin_token)
        status, answer = rest.request("POST", url, edge.admin_token, body)
    if status not in (200, 201):
        raise CallFailed("POST", url, status, rest.error_message(answer))
    return str(answer["fingerprint"])


def distributor_token(edge: EdgeTarget, state: State) -> str:
    """The distributor token kept for ``edge`` while the edge still accepts it, else a new one."""
    kept = state.get(edge.name, "distributor_token")
    if kept is not None:
        status, _ = rest.request("GET", edge.url + BUNDLES, kept)
        if status == 200:
            return kept
    body = {"role": "distributor", "username": DISTRIBUTOR_SUBJECT, "description": "the Distribution service"}
    answer = expect((200, 201), "POST", edge.url + "/access/api/v1/tokens", edge.admin_token, body)
    token = str(answer["access_token"])
    state.set(edge.name, "distributor_token", token)
    state.set(edge.name, "distributor_token_id", str(answer.get("token_id", "")))
    return token


def register_edge(distribution_url: str, admin_token: str, edge: EdgeTarget, token: str) -> bool:
    """``distribution edge add``; a registration with other fields is removed first. Answers whether it changed."""
    body = {
        "name": edge.name,
        "url": edge.url,
        "site_name": edge.site,
        "city_name": edge.city,
        "country_code": edge.country,
        "token": token,
    }
    url = f"{distribution_url}{V1}/edges"
    status, answer = rest.request("POST", url, admin_token, body)
    if status == 409:
        expect((204,), "DELETE", f"{url}/{edge.name}", admin_token)
        status, answer = rest.request("POST", url, admin_token, body)
    if status not in (200, 201):
        raise CallFailed("POST", url, status, rest.error_message(answer))
    return status == 201


def connect(
    distribution_url: str,
    admin_token: str,
    edges: list[EdgeTarget],
    state: State,
    say: Say,
    *,
    admin_registration: bool = False,
) -> None:
    """Trust, tokens and registration for every edge; ``say`` gets one line per edge.

    With ``admin_registration`` each edge is registered with its admin token instead of a
    distributor token: an edge trusts a signed-URL key (the fleet's) only from an admin."""
    armored = public_key(distribution_url)
    for edge in edges:
        fingerprint = trust_key(edge, armored)
        token = edge.admin_token if admin_registration else distributor_token(edge, state)
        register_edge(distribution_url, admin_token, edge, token)
        say(f"{edge.name} trusts key {fingerprint[-16:]}, registered as {edge.site}/{edge.city}/{edge.country}")
