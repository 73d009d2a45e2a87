"""Edges with remote repos, as an operator sets them up over REST, and downloads from them."""

from __future__ import annotations

import urllib.error
import urllib.request
from http.client import IncompleteRead
from pathlib import Path
from typing import Any

from devstack import rest
from devstack.services import EdgeProcess
from repository.policy import EDGE_UPLOADS_REPO
from tests.edge_setup import http

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CUT_SHORT = (IncompleteRead, ConnectionError, urllib.error.URLError)


def start_edge(base: Path, node_id: str, workers: int = 1, **env: str) -> EdgeProcess:
    edge = EdgeProcess(base, env={"EDGE_NODE_ID": node_id, **env}, workers=workers)
    edge.start()
    return edge


def upload(edge: EdgeProcess, path: str, data: bytes) -> None:
    url = f"{edge.artifactory_url}/{EDGE_UPLOADS_REPO}/{path}"
    status, answer = rest.request("PUT", url, edge.admin_token, data=data)
    assert status == 201, answer


def uploads_url(edge: EdgeProcess) -> str:
    return f"{edge.artifactory_url}/{EDGE_UPLOADS_REPO}"


def put_remote(edge: EdgeProcess, key: str, url: str, **fields: Any) -> tuple[int, Any]:
    body = {"rclass": "remote", "url": url, "anonymousRead": True, **fields}
    return http("PUT", f"{edge.artifactory_url}/api/repositories/{key}", edge.admin_token, body)


def add_remote(edge: EdgeProcess, key: str, url: str, **fields: Any) -> dict[str, Any]:
    status, answer = put_remote(edge, key, url, **fields)
    assert status == 200, answer
    return answer


def get(edge: EdgeProcess, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a download; a transfer cut short raises one of CUT_SHORT."""
    req = urllib.request.Request(f"{edge.artifactory_url}/{target}", headers=headers or {})
    try:
        with _DIRECT.open(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def cached(edge: EdgeProcess, target: str) -> bool:
    """Whether the edge's catalog holds the file (``?stats`` is the catalog's own, never the upstream's)."""
    status, _ = http("GET", f"{edge.artifactory_url}/api/storage/{target}?stats", edge.admin_token)
    assert status in (200, 404), status
    return status == 200
