"""Fleet rollout: one release to many simulated devices through two real edges, against plain
downloads of the same bytes from the same edges (``bench/fleet.py --part rollout``).

Set-up, as operators do it over REST: a ``distribution serve`` and two ``edge serve``
processes (``devstack/``); each edge trusts the service's GPG key and is registered with its
admin token (the service pushes the fleet's URL key with it); a release's files are deployed,
signed as bundle ``till-app`` and distributed to both edges; app ``till`` is defined and the
fleet's URL key pushed to the edges. Devices enroll through two enrollment tokens, half with
``site=edge-1`` and half with ``site=edge-2``, so each edge is the nearest of half the fleet.

Each simulated device does what ``node-agent run`` does (``agent/flow.py``), over aiohttp so
that a thousand share one process: it checks in at the service's poll interval with the
agent's jitter (``agent.loop.poll_delay``), its heartbeat carrying the action under way;
on an ``INSTALL`` action it gets the sources (``wire.fleet.sources_path``), checks the
signed manifest with the agent's own code (``agent.bundle.verified_manifest``, real gpg,
against the keys the enrollment answer gave, installed by ``agent.trust.DeviceTrust``),
downloads every file from the nearest offered edge with its signed URL
(``wire.fleet.download_url``; the next edge on a failure) checking size and sha256 against
the signed manifest, and reports ``downloading``, ``downloaded``, ``installing``,
``restarting``, ``checking`` and ``succeeded`` through ``FEEDBACK``, as the agent does.
Nothing is installed on disk: the bench measures the delivery, not ``rename``.

One simplification, said here and in the output: the manifest's signature is verified once
per process and the answer shared by every device whose sources carry the same manifest and
signature bytes (a real device runs gpg once per action; a gpg process per simulated device
would measure gpg start-up a thousand times on the load generator's core).

The time to 100% runs from the deployment's creation until its status shows every device
``succeeded``; devices learn of it at their next check-in, so it includes up to one poll
interval. The baseline: as many plain clients, through a connection pool of the same size,
each downloading the same files from the same edge with the same signed URLs and hashing
them, with no control plane involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import BenchError
from fleet_figures import CpuSpent
from releases import Content, Release

from agent.bundle import BundleRefused, verified_manifest
from agent.http import error_message
from agent.loop import poll_delay
from agent.trust import DeviceTrust
from devstack import rest, wiring
from devstack.services import DistributionProcess, EdgeProcess
from wire.fleet import (
    CHECK_IN,
    ENROLL,
    FEEDBACK,
    FLEET_API,
    Action,
    ActionKind,
    ActionReport,
    CheckIn,
    Enrollment,
    EnrollRequest,
    Feedback,
    FeedbackState,
    FlowStep,
    Heartbeat,
    InstalledApp,
    PublicKey,
    Sources,
    device_headers,
    download_url,
    sources_path,
)
from wire.manifest import Manifest, ManifestArtifact

APP = "till"
BUNDLE = "till-app"
VERSION = "2.0.0"
GROUP = "rollout"
EDGES = ("edge-1", "edge-2")
JITTER = 0.1  # the agent's default (agent/settings.py)
CHUNK = 256 * 1024
WATCH_EVERY = 0.25
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=600)


@dataclass
class SimDevice:
    name: str
    credential: str
    version: str | None = None  # what ``current`` would name
    report: ActionReport | None = None  # the action under way, as its heartbeat carries it
    started: set[str] = field(default_factory=set)
    action_at: float | None = None  # when its check-in first answered the install


class SharedVerifier:
    """``agent.bundle.verified_manifest`` (real gpg, the agent's trusted keys), run once per
    distinct (manifest, signature, bundle, version) and its answer shared by every device."""

    def __init__(self, trust: DeviceTrust) -> None:
        self._trust = trust
        self._verified: dict[str, Manifest] = {}
        self._lock = asyncio.Lock()
        self.runs = 0

    async def manifest(self, sources: Sources, action: Action) -> Manifest:
        parts = (sources.manifest, sources.signature, action.app.bundle, str(action.version))
        key = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        async with self._lock:
            if key not in self._verified:
                self.runs += 1
                self._verified[key] = await asyncio.to_thread(
                    verified_manifest, self._trust, sources.manifest, sources.signature, action
                )
        return self._verified[key]


def heartbeat(device: SimDevice) -> dict[str, Any]:
    apps = {} if device.version is None else {APP: InstalledApp(device.version)}
    beat = Heartbeat("bench", 1000, 1, 1 << 30, 1 << 28, 16 << 30, 8 << 30, apps, device.report)
    return beat.to_json()


class Simulation:
    """The simulated devices of one process. Their calls to the control plane go through a pool
    of their own (a real device has its own connection), their downloads through ``downloads``,
    the pool of the size the plain clients get too."""

    def __init__(
        self,
        service: DistributionProcess,
        session: aiohttp.ClientSession,
        downloads: aiohttp.ClientSession,
        verifier: SharedVerifier,
    ) -> None:
        self.url = service.url
        self.session = session
        self.downloads = downloads
        self.verifier = verifier
        self.devices: list[SimDevice] = []
        self.stop = asyncio.Event()
        self.failures: list[str] = []
        self.sources: Sources | None = None  # the first answer: the plain clients use its signed URLs

    async def call(self, device: SimDevice, method: str, path: str, body: Any = None) -> Any:
        headers = device_headers(device.credential)
        async with self.session.request(method, self.url + path, json=body, headers=headers) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise BenchError(f"{device.name}: {method} {path} answered {resp.status}: {error_message(raw)}")
        return json.loads(raw) if raw else None

    async def feedback(self, device: SimDevice, action: Action, state: FeedbackState, **fields: Any) -> None:
        """One report, as ``agent/flow.py``'s ``report`` sends it, and the heartbeat's action state after it."""
        report = Feedback(action.action_id, state, time=int(time.time() * 1000), **fields)
        await self.call(device, "POST", FEEDBACK, report.to_json())
        device.report = (
            None if state in (FeedbackState.SUCCEEDED, FeedbackState.FAILED) else ActionReport(action.action_id, state)
        )

    async def live(self, device: SimDevice, rng: random.Random, interval: float) -> None:
        """Check in at the server's interval until stopped; start each new install it is told of."""
        await asyncio.sleep(rng.uniform(0, interval))  # devices come up spread over one interval
        flows: set[asyncio.Task[None]] = set()
        while not self.stop.is_set():
            answer = CheckIn.from_json(await self.call(device, "POST", CHECK_IN, heartbeat(device)))
            for action in answer.actions:
                if action.kind == ActionKind.INSTALL and action.action_id not in device.started:
                    device.started.add(action.action_id)
                    device.action_at = time.perf_counter()
                    task = asyncio.create_task(self.install(device, action))
                    flows.add(task)
                    task.add_done_callback(flows.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), poll_delay(answer.poll_interval, JITTER, rng))
        if flows:
            await asyncio.gather(*flows)

    async def install(self, device: SimDevice, action: Action) -> None:
        previous, target = device.version, str(action.version)
        sources = Sources.from_json(await self.call(device, "GET", sources_path(action.action_id)))
        self.sources = self.sources or sources
        try:
            manifest = await self.verifier.manifest(sources, action)
        except BundleRefused as exc:
            await self.feedback(device, action, FeedbackState.FAILED, step=FlowStep.VERIFY, message=str(exc))
            self.failures.append(f"{device.name}: {exc}")
            return
        total = manifest.total_size
        await self.feedback(device, action, FeedbackState.DOWNLOADING, version=previous, bytes_total=total)
        tokens = {f.path: f.token for f in sources.files}
        for artifact in manifest.artifacts:
            if (problem := await self.fetch(sources, tokens.get(artifact.target), artifact)) is not None:
                await self.feedback(device, action, FeedbackState.FAILED, step=FlowStep.DOWNLOAD, message=problem)
                self.failures.append(f"{device.name}: {problem}")
                return
        await self.feedback(device, action, FeedbackState.DOWNLOADED, version=previous, bytes_total=total)
        await self.feedback(device, action, FeedbackState.INSTALLING, version=previous)
        await self.feedback(device, action, FeedbackState.RESTARTING, version=target)
        await self.feedback(device, action, FeedbackState.CHECKING, version=target)
        device.version = target
        await self.feedback(device, action, FeedbackState.SUCCEEDED, version=target)

    async def fetch(self, sources: Sources, token: str | None, artifact: ManifestArtifact) -> str | None:
        """The file from the first offered edge that gives it whole and correct; None, or why none did."""
        if token is None:
            return f"the sources name no token for {artifact.target}"
        answers = []
        for edge in sources.edges:
            got = await download(self.downloads, download_url(edge.url, artifact.target, token))
            if got == (artifact.size, artifact.sha256):
                return None
            answers.append(f"{edge.name}: {got}")
        return f"{artifact.target}: no edge gave it whole ({'; '.join(answers)})"


async def download(session: aiohttp.ClientSession, url: str) -> tuple[int, str] | str:
    """(size, sha256) of what the URL answers, or the failure."""
    digest, size = hashlib.sha256(), 0
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return f"status {resp.status}"
            async for chunk in resp.content.iter_chunked(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return size, digest.hexdigest()


class Stage:
    """The service, two edges and a signed release on both, set up over REST."""

    def __init__(self, release: Release, args: Any) -> None:
        self.release = release
        self.args = args
        self.url = release.service.url
        self.files = [
            Content(f"bin/part-{i:03d}.bin", len(data), hashlib.sha256(data).hexdigest(), data)
            for i, data in enumerate(os.urandom(args.rollout_file_kib * 1024) for _ in range(args.rollout_files))
        ]

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        return self.release.call(method, path, body, expect)

    async def build(self, edges: dict[str, EdgeProcess]) -> float:
        """Edges trusted and registered, the release on both, the app, the URL key pushed;
        answers the seconds the distribution took."""
        armored = wiring.public_key(self.url)
        for name, edge in edges.items():
            target = wiring.EdgeTarget(name, edge.url, edge.admin_token, name, "nowhere", "US")
            try:
                wiring.trust_key(target, armored)
                wiring.register_edge(self.url, self.release.service.admin_token, target, edge.admin_token)
            except rest.CallFailed as exc:
                raise BenchError(f"setting up {name}: {exc}") from None
        self.release.edges.update(edges)
        await self.release.deploy(f"{APP}/{VERSION}", self.files, concurrency=8)
        self.release.create_signed(BUNDLE, VERSION, f"{APP}/{VERSION}", len(self.files))
        took = await asyncio.to_thread(self.release.distribute, BUNDLE, VERSION)
        self.call("POST", f"{FLEET_API}/apps", {"name": APP, "bundle": BUNDLE, "install_dir": "/opt/till"}, (201,))
        pushed = self.call("POST", f"{FLEET_API}/url-key/propagate")
        if pushed["status"] != "SUCCESS":
            raise BenchError(f"the fleet's URL key did not reach every edge: {pushed}")
        return took

    def token(self, site: str) -> str:
        body = {"group": GROUP, "tags": {"site": site}, "expires_in": 24 * 3600}
        return str(self.call("POST", f"{FLEET_API}/enrollment-tokens", body, (201,))["token"])

    def deploy(self) -> int:
        body = {"app": APP, "version": VERSION, "targets": {"groups": [GROUP]}}
        return int(self.call("POST", f"{FLEET_API}/deployments", body, (201,))["id"])

    def succeeded(self, dep_id: int) -> tuple[int, int, str]:
        """(devices succeeded, devices targeted, deployment state)."""
        answer = self.call("GET", f"{FLEET_API}/deployments/{dep_id}?limit=1")
        done = sum(p["states"].get("succeeded", 0) for p in answer["phases"])
        return done, int(answer["total"]), str(answer["state"])


async def enroll_all(sim: Simulation, tokens: list[str], count: int, trust: DeviceTrust) -> None:
    """``count`` devices, alternating between the tokens (sites); the keys their enrollment
    answers give become the trusted ones, as ``node-agent enroll`` installs them."""
    pending = iter(range(count))
    keys: list[tuple[PublicKey, ...]] = []

    async def worker() -> None:
        for i in pending:
            body = EnrollRequest(tokens[i % len(tokens)], f"till-{i:05d}", {}, "bench").to_json()
            async with sim.session.post(sim.url + ENROLL, json=body) as resp:
                raw = await resp.read()
                if resp.status != 201:
                    raise BenchError(f"enroll till-{i}: {resp.status} {error_message(raw)}")
            answer = Enrollment.from_json(json.loads(raw))
            keys.append(answer.signing_keys)
            sim.devices.append(SimDevice(answer.name, answer.credential))

    async with asyncio.TaskGroup() as workers:
        for _ in range(16):
            workers.create_task(worker())
    if len(set(keys)) != 1:
        raise BenchError(f"the devices were given {len(set(keys))} different key sets")
    await asyncio.to_thread(trust.install, keys[0])


async def plain_downloads(
    session: aiohttp.ClientSession, urls: list[list[str]], expected: list[tuple[int, str]]
) -> float:
    """Every client downloads and hashes its files in turn, all clients at once: the seconds it took."""

    async def client(files: list[str]) -> None:
        for url, want in zip(files, expected, strict=True):
            if (got := await download(session, url)) != want:
                raise BenchError(f"plain download of {url}: {got}")

    begun = time.perf_counter()
    async with asyncio.TaskGroup() as clients:
        for files in urls:
            clients.create_task(client(files))
    return time.perf_counter() - begun


async def rollout(args: Any, release: Release, edges: dict[str, EdgeProcess], tmp: Path) -> None:
    stage = Stage(release, args)
    took = await stage.build(edges)
    per_device = sum(f.size for f in stage.files)
    print(
        f"\nrollout of {BUNDLE} {VERSION} ({len(stage.files)} files, {per_device / 1024:.0f} KiB) to"
        f" {args.rollout_devices:,} simulated devices through {', '.join(edges)}"
        f" (distributed to both edges in {took:.1f} s; poll interval {args.rollout_poll} s)",
        flush=True,
    )
    trust_dir = tmp / "device-trust"
    trust_dir.mkdir(mode=0o700)
    trust = DeviceTrust(trust_dir)
    verifier = SharedVerifier(trust)
    pool = aiohttp.TCPConnector(limit=args.rollout_connections)
    async with (
        aiohttp.ClientSession(connector=pool, timeout=HTTP_TIMEOUT, trust_env=False) as downloads,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=HTTP_TIMEOUT, trust_env=False
        ) as session,
    ):
        sim = Simulation(release.service, session, downloads, verifier)
        tokens = [stage.token(site) for site in EDGES]
        await enroll_all(sim, tokens, args.rollout_devices, trust)
        rng = random.Random(17)
        lives = [asyncio.create_task(sim.live(d, rng, args.rollout_poll)) for d in sim.devices]
        await asyncio.sleep(args.rollout_poll * 1.5)  # every device has checked in once or more
        cpu_rollout = CpuSpent(release.pids(), "devices")
        begun = time.perf_counter()
        dep_id = await asyncio.to_thread(stage.deploy)
        while True:
            done, total, state = await asyncio.to_thread(stage.succeeded, dep_id)
            if done == total == len(sim.devices):
                break
            if sim.failures or state not in ("running", "completed"):
                raise BenchError(f"deployment {state}, {done}/{total} succeeded: {sim.failures[:3]}")
            if time.perf_counter() - begun > args.rollout_timeout:
                raise BenchError(f"deployment not done after {args.rollout_timeout} s: {done}/{total} succeeded")
            await asyncio.sleep(WATCH_EVERY)
        to_100 = time.perf_counter() - begun
        rollout_cpu = cpu_rollout.line()
        last_told = max(d.action_at or begun for d in sim.devices) - begun
        sim.stop.set()
        await asyncio.gather(*lives)

        sources = sim.sources
        assert sources is not None
        base = {e.name: e.url for e in sources.edges}
        urls = [
            [download_url(base[EDGES[i % len(EDGES)]], f.path, f.token) for f in sources.files]
            for i in range(args.rollout_devices)
        ]
        cpu_plain = CpuSpent(release.pids(), "clients")
        plain = await plain_downloads(downloads, urls, [(f.size, f.sha256) for f in sources.files])
        plain_cpu = cpu_plain.line()
    total_mib = per_device * args.rollout_devices / (1 << 20)
    print(
        f"  time to 100% succeeded: {to_100:.1f} s (the last device was told at {last_told:.1f} s;"
        f" manifest signature checked by gpg {verifier.runs} time(s), shared by all devices)\n"
        f"  plain concurrent downloads of the same {total_mib:,.0f} MiB ({args.rollout_devices:,} clients,"
        f" {args.rollout_connections} connections): {plain:.1f} s\n"
        f"  rollout / plain downloads: {to_100 / plain:.2f}\n"
        f"  CPU seconds, rollout: {rollout_cpu}\n"
        f"  CPU seconds, plain:   {plain_cpu}",
        flush=True,
    )


def run_rollout(args: Any, start: Callable[[Path], DistributionProcess]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-rollout-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        service = stack.enter_context(start(base / "service"))
        edges = {name: stack.enter_context(EdgeProcess(base / name)) for name in EDGES}
        asyncio.run(rollout(args, Release(service), edges, base))
