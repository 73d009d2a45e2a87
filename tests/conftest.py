"""Shared fixtures: every backend, settings factories, and the edge app under test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web_app

from edge.app import create_app
from edge.settings import EdgeSettings
from repository.settings import StorageSettings
from storage_backends import StorageBackend, create_backend
from tests.edge_process import edge_server  # noqa: F401  (fixture: a real `edge serve` process)
from tests.gpg_keys import key_factory_fixture, keys_fixture  # noqa: F401  (session fixtures: real GnuPG keys)
from tests.postgres import catalog, db_target, postgres_server, postgres_url  # noqa: F401  (a real PostgreSQL; a database per test)
from tests.scheduling import pytest_collection_modifyitems  # noqa: F401  (the longest files first)
from tests.seaweed import s3_server  # noqa: F401  (session fixture: a real S3 server on loopback)

BACKENDS = ["local", "s3"]


def backend_params(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for one backend; S3 tests each get their own prefix in the shared bucket."""
    if name == "local":
        return {"root": str(tmp_path / "blobs")}
    server = request.getfixturevalue("s3_server")
    return {
        "endpoint_url": server["endpoint_url"],
        "bucket": server["bucket"],
        "prefix": f"test-{uuid.uuid4().hex[:12]}/",
        "region": server["region"],
        "access_key_id": server["access_key_id"],
        "secret_access_key": server["secret_access_key"],
    }


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def backend(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StorageBackend]:
    store = create_backend(backend_name, backend_params(backend_name, tmp_path, request))
    await store.open()
    try:
        yield store
        # Each test leaves the backend empty, like distribution's driver suite.
        async for sha in store.list():
            await store.delete(sha)
    finally:
        await store.close()


ADMIN_TOKEN = "test-admin-token"
UPLOADS = "artifactory-edge-uploads"


def make_settings(tmp_path: Path, **overrides: Any) -> EdgeSettings:
    """Edge settings on a temp data dir; ``storage`` may be a dict of storage settings."""
    storage = overrides.pop("storage", {})
    return EdgeSettings(
        data_dir=tmp_path / "edge",
        port=0,
        admin_token=ADMIN_TOKEN,
        storage=StorageSettings(**storage),
        **overrides,
    )


def storage_settings(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``local``, ``s3`` (presigned redirects) or ``s3-stream`` (bytes through the edge)."""
    if mode == "local":
        return {}
    params = backend_params("s3", tmp_path, request)
    return {"backend": "s3", "redirect_downloads": mode == "s3", **params}


@pytest.fixture
def edge_settings(tmp_path: Path) -> EdgeSettings:
    return make_settings(tmp_path)


@pytest.fixture
async def edge(edge_settings: EdgeSettings, aiohttp_client: Any) -> Any:
    """A test client on the real edge app, local storage. (Its settings come first: a database
    they name is dropped only after the app is closed.)"""
    return await aiohttp_client(create_app(edge_settings))


@pytest.fixture(params=["local", "s3", "s3-stream"])
async def any_edge(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path) -> Any:
    """The real edge app on every storage backend and download path."""
    settings = make_settings(tmp_path, storage=storage_settings(request.param, tmp_path, request))
    return await aiohttp_client(create_app(settings))


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def upload(client: Any, path: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
    resp = await client.put(f"/artifactory/{UPLOADS}/{path}", data=data, headers={**admin(), **(headers or {})})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def error_of(resp: Any) -> tuple[int, str]:
    """The status and message of an Artifactory-style error body, checking its shape."""
    body = await resp.json()
    assert list(body) == ["errors"] and len(body["errors"]) == 1
    (err,) = body["errors"]
    assert err["status"] == resp.status
    return err["status"], err["message"]


@pytest.fixture(autouse=True)
def _forget_finished_apps() -> Any:
    """aiohttp memoises middleware chains per app, keeping every test's app (and its boto3
    clients) alive until exit; clearing it after each test keeps memory and exit time flat."""
    yield
    clear = getattr(web_app, "_cached_build_middleware", None)
    if clear is not None:
        clear.cache_clear()
