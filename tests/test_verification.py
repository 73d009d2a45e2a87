"""Completed means the edge holds exactly the manifest: every file, not a sample.

After its commit, the Distribution service compares the digest of what the edge publishes
(wire/published.py: every path, sha256 and size) with the manifest's, and asks the edge
which blobs its store lacks. Here the edge's catalog or store is changed behind its back
between the commit and that check, in the middle of the bundle (where sampling the first
and the last file saw nothing), and the job must not be Completed.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.test_distribution_jobs import (
    FAILED,
    REPO,
    distribute,
    finished,
    signed_bundle,
    trusted_edge,
    wait_for,
)


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    """The service in-process; the edge it pushes to is a real process."""
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    return await aiohttp_client(create_app(settings))


FILES = {"a.txt": b"first file\n", "b.bin": b"the middle file " * 100, "c.txt": b"last file\n"}
MIDDLE = f"{REPO}/app/1.0/b.bin"


def _catalog(edge: EdgeProcess, sql: str, *args: Any) -> None:
    with sqlite3.connect(edge.data_dir / "catalog.db") as db:
        assert db.execute(sql, args).rowcount == 1


def remove_row(edge: EdgeProcess) -> None:
    _catalog(edge, "DELETE FROM artifacts WHERE repo = ? AND path = ?", REPO, "app/1.0/b.bin")


def alter_row(edge: EdgeProcess) -> None:
    other = hashlib.sha256(FILES["a.txt"]).hexdigest()  # a blob the edge holds, at the wrong path
    _catalog(edge, "UPDATE artifacts SET sha256 = ?, size = ? WHERE repo = ? AND path = ?",
             other, len(FILES["a.txt"]), REPO, "app/1.0/b.bin")  # fmt: skip


def delete_blob(edge: EdgeProcess) -> None:
    (blob,) = (edge.data_dir / "blobs").rglob(hashlib.sha256(FILES["b.bin"]).hexdigest())
    blob.unlink()


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        pytest.param(remove_row, "verification failed", id="row-removed"),
        pytest.param(alter_row, "verification failed", id="row-altered"),
        pytest.param(delete_blob, "missing 1 blobs: " + hashlib.sha256(FILES["b.bin"]).hexdigest(), id="blob-deleted"),
    ],
)
async def test_an_edge_changed_between_commit_and_check_is_not_reported_completed(
    dist: Any, edge_server: EdgeProcess, tamper: Callable[[EdgeProcess], None], said: str
) -> None:
    def after_commit(method: str, path: str, status: int) -> None:
        if path.endswith("/commit") and status == 200:
            tamper(edge_server)

    proxy = ThreadedServer(proxy_app(edge_server.url, Faults(on_answer=after_commit))).start()
    try:
        await trusted_edge(dist, edge_server, url=proxy.url)
        await signed_bundle(dist, "1.0", FILES)
        done = await wait_for(dist, "1.0", await distribute(dist, "1.0"), finished)
    finally:
        proxy.stop()
    (site,) = done["sites"]
    assert done["status"] == FAILED, done
    assert said in site["general_error"] and "us-east-1" in site["general_error"], site
