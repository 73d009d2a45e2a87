"""Release Bundle benchmark: create and sign a bundle of 10,000 artifacts on a real service.

Run by hand (``.venv/bin/python bench/bundles.py``); it is not part of the test suite.
It starts a real ``distribution serve`` (this interpreter's bin dir) on 127.0.0.1 and
a free port, in a temp dir, deploys 10,000 distinct small files into ``releases-local``
with concurrent PUTs (bounded), then times, over REST:

- ``POST /distribution/api/v1/release_bundle`` with ``dry_run`` (resolve the pattern only);
- the same with ``sign_immediately: true`` (resolve, store, build the manifest, sign);
- create without signing, then ``POST .../sign`` (each step and their sum).

Absolute numbers depend on the machine, so the same run measures the floor on the same
manifest bytes the service signed: ``hashlib.sha256`` over them, and plain
``gpg --detach-sign --armor`` (an ed25519 key, SHA512 as the service uses) in a GnuPG home
of its own; the service's times are printed as ratios against that floor.

Loopback only, every request has a time-out, and every process, gpg-agent and temp
file is removed on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from download import connect, start_node

from devstack.services import DistributionProcess

TOKEN = "bench-admin-token-" + os.urandom(6).hex()
REPO = "releases-local"
PREFIX = "app/10k"
V1 = "/distribution/api/v1"
HTTP_TIMEOUT = 300.0
KEY_UID = "Bench Floor <floor@example.com>"


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------- the service


def start_distribution(stack: contextlib.ExitStack, tmp: Path, max_artifacts: int) -> int:
    env = {"DISTRIBUTION_MAX_BUNDLE_ARTIFACTS": str(max_artifacts)}
    service = start_node(stack, DistributionProcess(tmp / "distribution", admin_token=TOKEN, repos=REPO, env=env))
    return service.port or 0


def file_content(index: int) -> bytes:
    """Distinct, small (about 100 B to 2 KiB), so no layer can dedupe them."""
    return f"bench artifact {index}\n".encode() + os.urandom(64 + (index * 7919) % 1984)


def file_path(index: int) -> str:
    return f"{PREFIX}/d{index // 100:03d}/file-{index:05d}.bin"


async def deploy(port: int, count: int, concurrency: int) -> tuple[float, int]:
    """PUT ``count`` files with ``concurrency`` requests in flight; seconds taken and bytes sent."""
    base = f"http://127.0.0.1:{port}/artifactory/{REPO}/"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            data = file_content(index)
            async with session.put(base + file_path(index), data=data, headers=auth()) as resp:
                if resp.status != 201:
                    raise BenchError(f"deploy of {file_path(index)}: {resp.status} {await resp.text()}")
            sent += len(data)
            if (index + 1) % 2000 == 0:
                print(f"  {index + 1} files deployed", flush=True)

    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started, sent


class Api:
    """One keep-alive loopback connection to the service; each call timed from send to last byte."""

    def __init__(self, stack: contextlib.ExitStack, port: int) -> None:
        self.conn = stack.enter_context(connect(port, timeout=HTTP_TIMEOUT))

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> tuple[float, bytes, dict[str, str]]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {**auth(), **({"Content-Type": "application/json"} if payload is not None else {})}
        started = time.perf_counter()
        self.conn.request(method, path, body=payload, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        seconds = time.perf_counter() - started
        if resp.status != expect:
            raise BenchError(f"{method} {path}: {resp.status} (expected {expect}): {data[:500]!r}")
        return seconds, data, {k.lower(): v for k, v in resp.getheaders()}


def create_body(version: str, *, sign: bool = False, dry_run: bool = False) -> dict[str, Any]:
    return {
        "name": "bench",
        "version": version,
        "spec": {"queries": [{"pattern": f"{REPO}/{PREFIX}/**"}]},
        "sign_immediately": sign,
        "dry_run": dry_run,
    }


def check_bundle(data: bytes, count: int, state: str) -> None:
    body = json.loads(data)
    if body["artifacts_count"] != count or body["state"] != state:
        raise BenchError(f"bundle has {body['artifacts_count']} artifacts in state {body['state']}")


# ---------------------------------------------------------------- the floor: plain hashlib and gpg


class FloorSigner:
    """Plain gpg in a home of its own, with an ed25519 key made for this run."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700)
        self.home = home
        self.base = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode", "loopback"]
        self._run("--passphrase", "", "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")

    def _run(self, *args: str, stdin: bytes = b"") -> bytes:
        done = subprocess.run([*self.base, *args], input=stdin, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout

    def sign(self, data: bytes) -> bytes:
        """What the service's signing amounts to: one gpg process, detached, armored, SHA512."""
        return self._run("--digest-algo", "SHA512", "--local-user", KEY_UID, "--detach-sign", "--armor", stdin=data)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, timeout=30)


def verify_service_signature(tmp: Path, public_key: bytes, signature: bytes, manifest: bytes) -> None:
    """The timed signature is real: plain gpg, knowing only the service's public key, accepts it."""
    home = tmp / "verify"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart", "--status-fd", "1"]
    subprocess.run([*gpg, "--import"], input=public_key, capture_output=True, timeout=60, check=True)
    (home / "m.json").write_bytes(manifest)
    (home / "m.asc").write_bytes(signature)
    done = subprocess.run(
        [*gpg, "--verify", str(home / "m.asc"), str(home / "m.json")], capture_output=True, timeout=60
    )
    if done.returncode != 0 or b"[GNUPG:] VALIDSIG" not in done.stdout:
        raise BenchError(f"the service's signature does not verify: {done.stdout.decode(errors='replace')}")


def best_of(runs: int, fn: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


# ---------------------------------------------------------------- the run


def fmt(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"{min(ms):9.1f} ms (median {statistics.median(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def run(count: int, concurrency: int, runs: int) -> None:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="dist-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        print(f"temp dir {tmp}; starting distribution serve ...", flush=True)
        port = start_distribution(stack, tmp, max_artifacts=max(count, 1))
        print(f"deploying {count} distinct small files into {REPO} ({concurrency} PUTs in flight) ...", flush=True)
        deploy_seconds, deployed_bytes = asyncio.run(deploy(port, count, concurrency))
        print(
            f"  deployed {count} files, {deployed_bytes / 1e6:.1f} MB, in {deploy_seconds:.1f} s "
            f"({count / deploy_seconds:.0f} files/s)\n"
        )

        api = Api(stack, port)
        resolve, signed_create, create, sign = [], [], [], []
        manifest = signature = b""
        answer_size = 0
        for r in range(runs):
            seconds, data, _ = api.call("POST", f"{V1}/release_bundle", create_body(f"dry-{r}", dry_run=True))
            check_bundle(data, count, "OPEN")
            resolve.append(seconds)

            version = f"signed-{r}"
            seconds, data, headers = api.call(
                "POST", f"{V1}/release_bundle", create_body(version, sign=True), expect=201
            )
            check_bundle(data, count, "SIGNED")
            signed_create.append(seconds)
            answer_size = len(data)
            _, manifest, _ = api.call("GET", f"{V1}/release_bundle/bench/{version}/manifest")
            _, signature, _ = api.call("GET", f"{V1}/release_bundle/bench/{version}/signature")
            if headers.get("x-checksum-sha256") != hashlib.sha256(manifest).hexdigest():
                raise BenchError("X-Checksum-Sha256 of the create answer is not the sha256 of the manifest")

            version = f"open-{r}"
            seconds, data, _ = api.call("POST", f"{V1}/release_bundle", create_body(version), expect=201)
            check_bundle(data, count, "OPEN")
            create.append(seconds)
            seconds, data, _ = api.call("POST", f"{V1}/release_bundle/bench/{version}/sign", {})
            check_bundle(data, count, "SIGNED")
            sign.append(seconds)
            print(
                f"  run {r + 1}/{runs}: dry run {resolve[-1]:.3f} s, create+sign {signed_create[-1]:.3f} s, "
                f"create {create[-1]:.3f} s + sign {sign[-1]:.3f} s",
                flush=True,
            )

        _, public_key, _ = api.call("GET", f"{V1}/keys/gpg/public")
        verify_service_signature(tmp, public_key, signature, manifest)

        floor = FloorSigner(tmp / "floor")
        stack.callback(floor.close)
        floor.sign(manifest)  # warm-up: starts the agent, as the service's first signature did
        hashing = best_of(max(runs, 5), lambda: hashlib.sha256(manifest).digest())
        gpg_sign = best_of(max(runs, 5), lambda: floor.sign(manifest))
        encode = best_of(
            max(runs, 5),
            lambda: json.dumps(
                json.loads(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode(),
        )
        create_then_sign = [c + s for c, s in zip(create, sign, strict=True)]
        floor_total = min(hashing) + min(gpg_sign)

        print(
            f"\nbundle of {count} artifacts; manifest {len(manifest):,} bytes ({len(manifest) / count:.0f} B/artifact);"
        )
        print(f"create answer {answer_size:,} bytes of JSON; times are best of {runs} (send to last byte, loopback)\n")
        print("service (REST, one keep-alive connection):")
        print(f"  dry run (resolve pattern)      {fmt(resolve)}")
        print(f"  create + sign_immediately      {fmt(signed_create)}")
        print(f"  create (unsigned)              {fmt(create)}")
        print(f"  sign (POST .../sign)           {fmt(sign)}")
        print(f"  create, then sign (sum)        {fmt(create_then_sign)}")
        print("floor (same manifest bytes, this process / plain gpg):")
        print(f"  hashlib.sha256                 {fmt(hashing)}")
        print(f"  gpg --detach-sign --armor      {fmt(gpg_sign)}")
        print(f"  hash + gpg sign                {floor_total * 1000:9.1f} ms")
        print(f"  (for scale: json canonical re-encode {min(encode) * 1000:.1f} ms)")
        print("ratios (service / floor):")
        print(f"  create + sign_immediately      {min(signed_create) / floor_total:8.1f}x")
        print(f"  sign alone                     {min(sign) / floor_total:8.1f}x")
        print(f"  create, then sign              {min(create_then_sign) / floor_total:8.1f}x")
        slowest = max(max(signed_create), max(create_then_sign))
        if slowest > 3 * min(min(signed_create), min(create_then_sign)):
            print(
                f"WARNING: the slowest create took {slowest:.1f} s, over 3x the fastest: "
                "times grow with the bundles already stored (see the per-run lines)"
            )
    print(f"\ntotal wall time: {time.monotonic() - started:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="artifacts in the bundle [10000]")
    parser.add_argument("--concurrency", type=int, default=32, help="PUTs in flight while deploying [32]")
    parser.add_argument("--runs", type=int, default=3, help="times each bundle call is measured [3]")
    args = parser.parse_args()
    if not (1 <= args.count <= 200_000 and 1 <= args.concurrency <= 256 and 1 <= args.runs <= 20):
        parser.error("--count 1..200000, --concurrency 1..256, --runs 1..20")
    if shutil.which("gpg") is None:
        print("bench failed: gpg is not installed", file=sys.stderr)
        return 1
    run_bench(lambda: run(args.count, args.concurrency, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
