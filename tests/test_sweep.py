"""The sweep at the end of a scrub pass: blobs that nothing references any more (left by a process
killed between an index change and its collect) are deleted; referenced, pinned and young blobs
are not, whatever page of the store's listing they fall in."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.app import create_app
from repository import artifacts as artifacts_module
from repository.http import keys
from repository.http.scrub_api import scrubber_key
from repository.scrub import ScrubSettings
from tests.conftest import UPLOADS, make_settings, upload

QUIET = ScrubSettings(enabled=False, rate=1024**3)
AN_HOUR_AND_A_BIT = 3700


@pytest.fixture
async def node(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await aiohttp_client(create_app(make_settings(tmp_path, scrub=QUIET)))


async def store_unreferenced(node: Any, data: bytes, *, age: float = 0) -> str:
    """A blob in the store with no index entry, as a killed undistribute leaves it; ``age`` seconds old."""
    storage = node.server.app[keys.storage]
    async with await storage.writer() as writer:
        await writer.write(data)
        sha256 = (await writer.commit()).sha256
    if age:
        path = await storage.local_path(sha256)
        then = time.time() - age
        os.utime(path, (then, then))
    return sha256


async def test_a_pass_deletes_old_unreferenced_blobs_and_keeps_referenced_and_young_ones(node: Any) -> None:
    storage = node.server.app[keys.storage]
    await upload(node, "kept.txt", b"referenced")
    kept = hashlib.sha256(b"referenced").hexdigest()
    os.utime(await storage.local_path(kept), (time.time() - AN_HOUR_AND_A_BIT,) * 2)
    orphan = await store_unreferenced(node, b"left by a kill -9", age=AN_HOUR_AND_A_BIT)
    young = await store_unreferenced(node, b"written a moment ago, its index entry is on the way")

    assert await node.server.app[scrubber_key].run_pass()

    assert not await storage.exists(orphan)
    assert await storage.exists(young), "a blob younger than the grace may be a deploy about to index it"
    assert await storage.exists(kept)
    resp = await node.get(f"/artifactory/{UPLOADS}/kept.txt")
    assert resp.status == 200 and await resp.read() == b"referenced"


@pytest.mark.parametrize("orphans", [0, 1, 2, 3, 4, 7])
async def test_every_unreferenced_blob_is_found_across_pages_of_the_listing(
    node: Any, orphans: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts_module, "SWEEP_PAGE", 3)  # limits: 0, 1, page-1, page, page+1, two pages+1
    storage = node.server.app[keys.storage]
    for i in range(4):  # referenced blobs interleave with the orphans in the listing
        await upload(node, f"kept-{i}.txt", f"kept {i}".encode())
    made = [await store_unreferenced(node, f"orphan {i}".encode()) for i in range(orphans)]

    assert await node.server.app[keys.artifacts].sweep(grace=timedelta(0)) == orphans

    assert [s for s in made if await storage.exists(s)] == []
    for i in range(4):
        resp = await node.get(f"/artifactory/{UPLOADS}/kept-{i}.txt")
        assert resp.status == 200 and await resp.read() == f"kept {i}".encode()
