"""A Distribution service and a pull-mode edge as real processes: what the pull-mode tests share.

The edge is registered with ``mode: pull`` and no URL; it is started with the service's URL
(or a proxy's in front of it) and the credential the registration answered, and it polls
every second.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack.services import EdgeProcess
from tests.edge_setup import trust
from tests.test_distribute_e2e import V1, Service, public_key
from wire.pull import CREDENTIAL_HEADER

PULL_EDGE = {"name": "pull-1", "mode": "pull", "site_name": "inbound-only", "city_name": "ber", "country_code": "DE"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def register(service: Service, name: str = "pull-1", site: str = PULL_EDGE["site_name"]) -> str:
    """Register a pull-mode edge; answers the credential, which only this answer carries."""
    status, body = service.call("POST", f"{V1}/edges", PULL_EDGE | {"name": name, "site_name": site})
    assert status == 201, body
    assert body["url"] is None and body["mode"] == "pull"
    return str(body["credential"])


def pull_edge(base: Path, service_url: str, credential: str, **env: str) -> EdgeProcess:
    """A pull-mode edge polling ``service_url`` every second (not started)."""
    settings = {"EDGE_PULL_SERVICE_URL": service_url, "EDGE_PULL_CREDENTIAL": credential, "EDGE_PULL_INTERVAL": "1"}
    return EdgeProcess(base, env=settings | env)


def started(edge: EdgeProcess, service: Service) -> EdgeProcess:
    """Start ``edge`` and make it trust the service's signing key, as its operator does."""
    edge.start()
    trust(edge, public_key(service))
    return edge


def call(method: str, url: str, credential: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    """One call with an edge credential (or other headers); answers (status, JSON or bytes)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    for key, value in ({CREDENTIAL_HEADER: credential} if credential else {}).items() | (headers or {}).items():
        request.add_header(key, value)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(request, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw
