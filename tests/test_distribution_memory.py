"""Memory of a real Distribution service does not grow with a bundle's file count.

Creating, signing and answering a bundle stream its files a page at a time (staging table,
streaming manifest encoder, gpg reading a spool file, paged answers), so a bundle of many
files costs the service what one of a few does. Checked with the process's peak resident
memory (VmHWM), which does not depend on timing: a first bundle of a few pages of files warms
every code path, thread and cache up, then the peak may grow only a little while a bundle of
six times as many files is made.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from devstack.services import SOURCE_REPO, DistributionProcess
from tests.distribution_process import distribution_server_fixture  # noqa: F401
from wire.manifest import decode

MiB = 1024 * 1024
WARM_UP = 2_000  # two pages of everything that goes a page at a time
FILES = 12_000
# Holding every file as Python objects costs some 3 to 5 KiB a file (artifacts, their manifest
# objects and JSON, the answer's list): 30 MiB and more here; a manifest held whole,
# 7 MiB. Paged, the growth is a MiB or two.
GROWTH_LIMIT = 6 * MiB
V1 = "/distribution/api/v1"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


async def deploy(session: aiohttp.ClientSession, url: str, folder: str, count: int) -> None:
    pending = iter(range(count))

    async def worker() -> None:
        for i in pending:
            async with session.put(f"{url}/artifactory/{SOURCE_REPO}/{folder}/{i:06d}.bin", data=f"{folder} {i}") as r:
                assert r.status == 201, await r.text()

    await asyncio.gather(*(worker() for _ in range(8)))


async def create_and_sign(session: aiohttp.ClientSession, url: str, folder: str) -> dict[str, Any]:
    body = {
        "name": folder,
        "version": "1",
        "sign_immediately": True,
        "spec": {"queries": [{"pattern": f"{SOURCE_REPO}/{folder}/*"}]},
    }
    async with session.post(f"{url}{V1}/release_bundle", json=body) as created:
        assert created.status == 201, await created.text()
        answer: dict[str, Any] = await created.json()
    async with session.get(f"{url}{V1}/release_bundle/{folder}/1") as got:
        assert got.status == 200
        assert (await got.json())["artifacts"] == answer["artifacts"]
    return answer


async def run(service: DistributionProcess) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {service.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        url = service.url
        await deploy(session, url, "small", WARM_UP)
        await deploy(session, url, "large", FILES)
        small = await create_and_sign(session, url, "small")
        assert small["state"] == "SIGNED" and len(small["artifacts"]) == WARM_UP
        before = peak_rss(service.pid)
        large = await create_and_sign(session, url, "large")
        after = peak_rss(service.pid)
        assert large["state"] == "SIGNED" and large["artifacts_count"] == FILES
        assert [a["targetRepoPath"] for a in large["artifacts"]] == [
            f"{SOURCE_REPO}/large/{i:06d}.bin" for i in range(FILES)
        ]
        async with session.get(f"{url}{V1}/release_bundle/large/1/manifest") as got:
            manifest = decode(await got.read())
        assert [a.target for a in manifest.artifacts] == [a["targetRepoPath"] for a in large["artifacts"]]
        assert json.dumps(large["artifacts"][0]).count("checksum") == 1
    return before, after


def test_a_bundle_of_many_files_is_created_and_signed_in_flat_memory(distribution_server: DistributionProcess) -> None:
    before, after = asyncio.run(run(distribution_server))
    print(f"service peak RSS {before / MiB:.0f} MiB before the {FILES}-file bundle, {after / MiB:.0f} MiB after")
    assert after - before < GROWTH_LIMIT
