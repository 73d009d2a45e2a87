"""Faults in what clients send: a deploy over a file an edge already serves, and a bundle create.

A client's connection drops part way, its body arrives with a byte damaged, or it sends the same
request twice (a retry after a time-out). What a user relies on: the file already there is
served with its old bytes until a whole, verified replacement lands; a repeated request is the
same success, never a second copy; a create whose answer never arrived is answered again as made.
(The same faults without a file already there: tests/test_deploy.py.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from storage_backends.local import LocalBackend, LocalWriter
from tests.conftest import ADMIN_TOKEN, UPLOADS, admin, error_of, upload
from tests.fault_servers import flip_byte
from tests.test_deploy import snapshot
from tests.test_distribution_api import REPO, V1, create_body, deploy

OLD = os.urandom(200_000)
NEW = os.urandom(900_000)
PATH = f"/artifactory/{UPLOADS}/tools/app.bin"


async def served(client: Any, path: str = PATH) -> tuple[int, bytes]:
    resp = await client.get(path)
    return resp.status, await resp.read()


async def back_to(client: Any, before: tuple[list[str], list[str]]) -> None:
    """Wait until the stored state (temp files included) is ``before`` again: the edge frees
    what a dropped connection brought as soon as it notices the drop."""
    for _ in range(200):  # a hang guard, not a speed check
        if await snapshot(client) == before:
            return
        await asyncio.sleep(0.05)
    assert await snapshot(client) == before


async def test_a_deploy_over_a_file_cut_off_part_way_leaves_the_old_bytes_served(edge: Any) -> None:
    await upload(edge, "tools/app.bin", OLD)
    before = await snapshot(edge)
    reader, writer = await asyncio.open_connection(edge.server.host, edge.server.port)
    head = (
        f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(NEW)}\r\n\r\n"
    )
    writer.write(head.encode() + NEW[: len(NEW) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await back_to(edge, before)
    assert await served(edge) == (200, OLD)
    await upload(edge, "tools/app.bin", NEW)  # the client tries again, whole this time
    assert await served(edge) == (200, NEW)


async def test_a_blob_writer_whose_caller_is_cancelled_while_it_is_made_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled (the test server cancels a handler whose client went away; a service
    does so at shutdown) while the store makes its temp file, in a worker thread, must not leave
    that file behind: nobody else would remove it before the stale-file sweep an hour later."""
    store = LocalBackend(tmp_path / "blobs")
    await store.open()
    made, proceed = threading.Event(), threading.Event()
    make = LocalWriter.__init__

    def slow_make(self: LocalWriter, backend: LocalBackend, all_digests: bool) -> None:
        make(self, backend, all_digests)
        made.set()
        proceed.wait(10)

    monkeypatch.setattr(LocalWriter, "__init__", slow_make)
    caller = asyncio.ensure_future(store.writer())
    assert await asyncio.to_thread(made.wait, 10)
    assert len(list(store.temp_dir.iterdir())) == 1  # the file exists; its writer is not handed over yet
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    proceed.set()
    for _ in range(100):  # a hang guard, not a speed check
        if not list(store.temp_dir.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert list(store.temp_dir.iterdir()) == []


async def test_a_deploy_over_a_file_damaged_on_the_way_is_refused_by_its_checksum_and_changes_nothing(
    edge: Any,
) -> None:
    await upload(edge, "tools/app.bin", OLD)
    before = await snapshot(edge)
    damaged = flip_byte(NEW, len(NEW) // 2)
    resp = await edge.put(PATH, data=damaged, headers={**admin(), "X-Checksum-Sha256": hashlib.sha256(NEW).hexdigest()})
    status, message = await error_of(resp)
    assert status == 409 and "mismatch" in message.lower()
    assert await snapshot(edge) == before
    assert await served(edge) == (200, OLD)


async def test_the_same_deploy_twice_is_one_file_with_its_first_created_time_and_one_blob(edge: Any) -> None:
    await upload(edge, "tools/other.bin", OLD)
    first = await upload(edge, "tools/app.bin", NEW)
    before = await snapshot(edge)
    again = await upload(edge, "tools/app.bin", NEW)  # a retry after a time-out
    assert again["created"] == first["created"] and again["checksums"] == first["checksums"]
    assert await snapshot(edge) == before
    assert await served(edge) == (200, NEW)
    assert await served(edge, f"/artifactory/{UPLOADS}/tools/other.bin") == (200, OLD)


async def test_a_bundle_create_whose_connection_drops_before_the_answer_is_answered_as_made_when_retried(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    dist = await aiohttp_client(create_app(settings))
    for version in ("1.0", "2.0"):
        for i in range(20):
            await deploy(dist, f"app/{version}/f{i}.bin", os.urandom(1000))
    v1 = create_body("1.0", f"{REPO}/app/1.0/*", sign_immediately=True)
    assert (await dist.post(f"{V1}/release_bundle", json=v1, headers=admin())).status == 201
    kept = await (await dist.get(f"{V1}/release_bundle/app/1.0/signature", headers=admin())).read()

    body = create_body("2.0", f"{REPO}/app/2.0/*", sign_immediately=True)
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(dist.server.host, dist.server.port)
    writer.write(
        f"POST {V1}/release_bundle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    writer.close()  # gone before the answer
    await writer.wait_closed()

    retried = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert retried.status == 201, await retried.text()
    made = await retried.json()
    assert (made["state"], made["artifacts_count"]) == ("SIGNED", 20)
    listed = await (await dist.get(f"{V1}/release_bundle/app", headers=admin())).json()
    assert sorted(b["version"] for b in listed) == ["1.0", "2.0"]
    assert await (await dist.get(f"{V1}/release_bundle/app/1.0/signature", headers=admin())).read() == kept
