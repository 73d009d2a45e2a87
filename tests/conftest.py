"""Shared fixtures: every backend, settings factories, and the edge app under test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage_backends import StorageBackend, create_backend
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
async def backend(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[StorageBackend]:
    store = create_backend(backend_name, backend_params(backend_name, tmp_path, request))
    await store.open()
    try:
        yield store
        # Each test leaves the backend empty, like distribution's driver suite.
        async for sha in store.list():
            await store.delete(sha)
    finally:
        await store.close()
