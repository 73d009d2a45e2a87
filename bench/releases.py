"""A Distribution service and its edges for a benchmark, driven as a release manager drives them.

Every process is started by ``devstack/`` (``EdgeProcess``, ``DistributionProcess``) and wired
as an operator wires it (``devstack/wiring.py``); every call is one a user makes over REST:
deploy files, create and sign a bundle, distribute it, delete it from the edges, watch the
status until it says ``Completed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from common import BenchError

from devstack import rest, wiring
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess

V1 = "/distribution/api/v1"
HTTP_TIMEOUT = 600.0
POLL_INTERVAL = 0.05
PROGRESS_EVERY = 10.0
DONE = ("Completed", "Failed")


def rules(*sites: str) -> list[dict[str, Any]]:
    """Distribution rules for the edges of these sites (every edge when none is named)."""
    names = sites or ("*",)
    return [{"site_name": site, "city_name": "*", "country_codes": ["*"]} for site in names]


@dataclass(frozen=True)
class Content:
    """One file to deploy: its path under the bundle's folder and where its bytes come from."""

    rel: str
    size: int
    sha256: str
    data: bytes | None = None  # small files are held in memory
    path: Path | None = None  # large ones are streamed from disk


def vm_kib(pid: int, field: str) -> int:
    """A ``VmHWM``/``VmRSS`` figure of a process, in KiB (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for pid {pid}")


class Release:
    """The service, the edges registered with it, and a release manager's calls."""

    def __init__(self, service: DistributionProcess) -> None:
        self.service = service
        self.edges: dict[str, EdgeProcess] = {}

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        try:
            status, answer = rest.request(
                method, self.service.url + path, self.service.admin_token, body, timeout=HTTP_TIMEOUT
            )
        except rest.CallFailed as exc:
            raise BenchError(str(exc)) from None
        if status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {str(answer)[:500]}")
        return answer

    def register(self, edges: dict[str, EdgeProcess]) -> None:
        """Trust, a distributor token and a registration per edge; the edge's name is its site's too."""
        targets = [
            wiring.EdgeTarget(name, edge.url, edge.admin_token, name, "nowhere", "US") for name, edge in edges.items()
        ]
        try:
            wiring.connect(self.service.url, self.service.admin_token, targets, wiring.State(None), say=lambda _: None)
        except rest.CallFailed as exc:
            raise BenchError(f"setting up the edges failed: {exc}") from None
        self.edges.update(edges)

    async def deploy(self, folder: str, files: Iterable[Content], concurrency: int) -> int:
        """PUT every file under ``{SOURCE_REPO}/{folder}/``, ``concurrency`` at a time; answers how many."""
        base = f"{self.service.url}/artifactory/{SOURCE_REPO}/{folder}/"
        auth = {"Authorization": f"Bearer {self.service.admin_token}"}
        pending = iter(files)  # shared: each worker takes the next file
        done = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal done
            for f in pending:
                headers = {**auth, "X-Checksum-Sha256": f.sha256, "Content-Length": str(f.size)}
                body: Any = f.data
                with contextlib.ExitStack() as opened:
                    if f.path is not None:
                        body = opened.enter_context(f.path.open("rb"))
                    async with session.put(base + f.rel, data=body, headers=headers) as resp:
                        if resp.status != 201:
                            raise BenchError(f"deploy of {f.rel}: {resp.status} {(await resp.text())[:300]}")
                done += 1

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session,
            asyncio.TaskGroup() as workers,  # the first failure cancels the others
        ):
            for _ in range(concurrency):
                workers.create_task(worker(session))
        return done

    def create_signed(self, name: str, version: str, folder: str, count: int) -> None:
        spec = {"queries": [{"pattern": f"{SOURCE_REPO}/{folder}/**"}]}
        body = {"name": name, "version": version, "spec": spec, "sign_immediately": True}
        answer = self.call("POST", f"{V1}/release_bundle", body, expect=(201,))
        if answer.get("artifacts_count") != count or answer.get("state") != "SIGNED":
            raise BenchError(
                f"bundle {name} {version}: {answer.get('artifacts_count')} artifacts, {answer.get('state')}"
            )

    def distribute(self, name: str, version: str, sites: tuple[str, ...] = (), timeout: float = 600) -> float:
        """Seconds from the POST until the status says Completed."""
        return self._watch(
            name, version, f"{V1}/distribution/{name}/{version}", {"distribution_rules": rules(*sites)}, timeout
        )

    def undistribute(self, name: str, version: str, sites: tuple[str, ...] = (), timeout: float = 600) -> float:
        """Seconds from the delete's POST until its status says Completed (the bundle kept on the service)."""
        body = {"distribution_rules": rules(*sites), "on_success": "keep"}
        return self._watch(name, version, f"{V1}/distribution/{name}/{version}/delete", body, timeout)

    def _watch(self, name: str, version: str, path: str, body: dict[str, Any], timeout: float) -> float:
        begun = time.perf_counter()
        answer = self.call("POST", path, body, expect=(200, 202))
        if answer.get("id") is None:
            raise BenchError(f"{path} started nothing: {answer}")
        status_path = f"{V1}/release_bundle/{name}/{version}/distribution/{answer['id']}"
        report = begun + PROGRESS_EVERY
        while True:
            status = self.call("GET", status_path)
            now = time.perf_counter()
            if status["status"] in DONE:
                break
            if now - begun > timeout:
                raise BenchError(f"{path} not done after {timeout:.0f} s: {status['status']}")
            if now >= report:
                report += PROGRESS_EVERY
                sites = ", ".join(f"{s['target_artifactory']['name']} {s['status']}" for s in status["sites"])
                print(f"    {now - begun:6.1f} s: {sites}", flush=True)
            time.sleep(POLL_INTERVAL)
        if status["status"] != "Completed":
            errors = {s["target_artifactory"]["name"]: s["general_error"] for s in status["sites"]}
            raise BenchError(f"{path} ended {status['status']}: {errors}")
        return now - begun

    def pids(self) -> dict[str, int]:
        return {"service": self.service.pid, **{name: e.pid for name, e in self.edges.items()}}


async def check_served(url: str, samples: Iterable[Content]) -> None:
    """Download each sample (following an S3 edge's redirect) and compare its sha256."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), trust_env=False) as session:
        for f in samples:
            digest = hashlib.sha256()
            async with session.get(f"{url}/{f.rel}") as resp:
                async for chunk in resp.content.iter_chunked(1024 * 1024):
                    digest.update(chunk)
            if resp.status != 200 or digest.hexdigest() != f.sha256:
                raise BenchError(f"{url}/{f.rel} is served wrong: status {resp.status}")
